package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestReadyz checks /readyz's answer for each readiness state, with and
// without ?standby=ok.
func TestReadyz(t *testing.T) {
	var st atomic.Pointer[readyState]
	srv, err := serveHTTP("127.0.0.1:0", newMetrics(), func() readyState { return *st.Load() }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := srv.Addr
	for _, c := range []struct {
		st               readyState
		plain, standbyOK int
	}{
		{readyState{ready: true, why: "streaming"}, 200, 200},
		{readyState{standby: true, why: "standby: slot held by pid 42"}, 503, 200},
		{readyState{why: "nats: disconnected"}, 503, 503},
		// A reason that merely reads like a standby's is not one.
		{readyState{why: "standby: looks like one"}, 503, 503},
	} {
		st.Store(&c.st)
		for q, want := range map[string]int{"": c.plain, "?standby=ok": c.standbyOK} {
			resp, err := http.Get("http://" + addr + "/readyz" + q)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want || strings.TrimSpace(string(body)) != c.st.why {
				t.Errorf("%+v: /readyz%s = %d %q, want %d %q", c.st, q, resp.StatusCode, body, want, c.st.why)
			}
		}
	}
}
