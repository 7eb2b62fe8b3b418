package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHealthcheck runs `outboxrelay healthcheck` against an HTTP server
// that answers /readyz like the relay: 200 when ready, 503 with the reason
// when not. The exit code must be 0 or 1, never 2 (Docker reserves it).
func TestHealthcheck(t *testing.T) {
	var status atomic.Int32
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		hits.Add(1)
		code := int(status.Load())
		w.WriteHeader(code)
		if code == http.StatusOK {
			fmt.Fprintln(w, "streaming")
		} else {
			fmt.Fprintln(w, "standby: another relay holds slot \"outboxrelay\"\nsecond line")
		}
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	write := func(name, listen string) string {
		p := filepath.Join(dir, name)
		body := fmt.Sprintf("postgres:\n  url: postgres://relay@db/app\nhttp:\n  listen: %q\n", listen)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The relay in a container listens on 0.0.0.0; the check must call loopback.
	wildcard := write("wildcard.yaml", "0.0.0.0:"+port)
	noHost := write("nohost.yaml", ":"+port)
	disabled := write("disabled.yaml", "")
	free := freeAddr(t)
	refused := write("refused.yaml", free)

	for _, tc := range []struct {
		name   string
		status int
		args   []string
		code   int
		want   string // in stdout when 0, in stderr otherwise
	}{
		{"ready by url", 200, []string{"-url", srv.URL + "/readyz"}, exitOK, "ready: streaming"},
		{"url without path means /readyz", 200, []string{"-url", srv.URL}, exitOK, "ready: streaming"},
		{"not ready by url", 503, []string{"-url", srv.URL + "/readyz"}, exitFailure, "503 Service Unavailable: standby: another relay holds slot"},
		{"ready by config 0.0.0.0", 200, []string{"-config", wildcard}, exitOK, "ready: streaming"},
		{"not ready by config 0.0.0.0", 503, []string{"-config", wildcard}, exitFailure, "not ready: GET http://127.0.0.1:" + port + "/readyz: 503"},
		{"ready by config :port", 200, []string{"-config", noHost}, exitOK, "ready: streaming"},
		{"connection refused", 200, []string{"-config", refused}, exitFailure, "not ready: GET http://" + free + "/readyz"},
		{"http disabled", 200, []string{"-config", disabled}, exitFailure, `http.listen is ""`},
		{"missing config", 200, []string{"-config", filepath.Join(dir, "nope.yaml")}, exitFailure, "nope.yaml"},
		{"bad url", 200, []string{"-url", "127.0.0.1:8080"}, exitFailure, "not an http(s) URL"},
		{"bad flag", 200, []string{"-nope"}, exitFailure, "-nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"healthcheck"}, tc.args...), &stdout, &stderr)
			if got := exitCode(err, &stderr); got != tc.code {
				t.Fatalf("exit code %d, want %d (err %v)", got, tc.code, err)
			}
			out := stdout.String()
			if tc.code != exitOK {
				out = stderr.String()
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output %q does not contain %q", out, tc.want)
			}
			if tc.code != exitOK && strings.Contains(out, "second line") {
				t.Fatalf("output %q is more than the first line of the reason", out)
			}
		})
	}
	if hits.Load() == 0 {
		t.Fatal("the server's /readyz was never called")
	}
}

// TestHealthcheckTimeout checks that a relay that accepts but never answers
// fails the check within -timeout instead of hanging the container runtime.
func TestHealthcheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	start := time.Now()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"healthcheck", "-url", srv.URL, "-timeout", "200ms"}, &stdout, &stderr)
	if got := exitCode(err, &stderr); got != exitFailure {
		t.Fatalf("exit code %d, want %d (err %v)", got, exitFailure, err)
	}
	if !strings.Contains(stderr.String(), "no answer within 200ms") {
		t.Fatalf("stderr %q does not say it timed out", stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s despite -timeout 200ms", d)
	}
}

func TestDialAddr(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"0.0.0.0:8080", "127.0.0.1:8080"},
		{"[::]:8080", "[::1]:8080"},
		{":8080", "127.0.0.1:8080"},
		{"127.0.0.1:9000", "127.0.0.1:9000"},
		{"relay.internal:8080", "relay.internal:8080"},
		{"[::1]:8080", "[::1]:8080"},
	} {
		got, err := dialAddr(tc.listen)
		if err != nil || got != tc.want {
			t.Errorf("dialAddr(%q) = %q, %v; want %q", tc.listen, got, err, tc.want)
		}
	}
	if _, err := dialAddr("8080"); err == nil {
		t.Error(`dialAddr("8080") accepted a listen address without a port separator`)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
