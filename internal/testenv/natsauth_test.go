package testenv_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestNATSAuthHelpers: each secured server admits a client with its
// ClientOptions (and JetStream answers), and turns away one without them or
// with wrong ones, so tests built on it cannot pass against an open server.
func TestNATSAuthHelpers(t *testing.T) {
	tlsFiles := testenv.WriteTLSFiles(t)
	otherCA := testenv.WriteTLSFiles(t)
	nkey, _, err := testenv.NATSNKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	operator, _, err := testenv.NATSOperator(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		opts  testenv.NATSOptions
		wrong []nats.Option
		want  string // in the error of a client with wrong options
	}{
		{"user", testenv.NATSUserPassword("relay", "pw-1"), []nats.Option{nats.UserInfo("relay", "pw-2")}, "Authorization Violation"},
		{"token", testenv.NATSToken("tok-1"), []nats.Option{nats.Token("tok-2")}, "Authorization Violation"},
		{"nkey", nkey, nil, "Authorization Violation"},
		{"operator", operator, nil, "Authorization Violation"},
		{"tls", testenv.NATSTLS(tlsFiles, false), []nats.Option{nats.RootCAs(otherCA.CA)}, "certificate signed by unknown authority"},
		{"tls-verify", testenv.NATSTLS(tlsFiles, true), []nats.Option{nats.RootCAs(tlsFiles.CA)}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := testenv.StartNATS(t, c.opts)
			nc, err := nats.Connect(n.URL(), c.opts.ClientOptions...)
			if err != nil {
				t.Fatalf("connect with the client options: %v", err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := js.AccountInfo(ctx); err != nil {
				t.Fatalf("JetStream for the authenticated client: %v", err)
			}
			for _, opts := range [][]nats.Option{nil, c.wrong} {
				bad, err := nats.Connect(n.URL(), append([]nats.Option{nats.Timeout(2 * time.Second)}, opts...)...)
				if err == nil {
					bad.Close()
					t.Fatalf("a client with options %v connected; want it refused", opts)
				}
				if opts != nil && !strings.Contains(err.Error(), c.want) {
					t.Errorf("wrong credentials: got %q, want it to contain %q", err, c.want)
				}
			}
		})
	}
}

// TestTLSFiles: the server certificate is for the requested hosts and
// chains to the CA; the client certificate is for client authentication.
func TestTLSFiles(t *testing.T) {
	f := testenv.WriteTLSFiles(t)
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, f.CA))
	srv := readCert(t, f.ServerCert)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: roots}); err == nil {
		t.Error("server certificate verifies for example.com; want only 127.0.0.1 and localhost")
	}
	cli := readCert(t, f.ClientCert)
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	for _, p := range []string{f.ServerKey, f.ClientKey} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPostgresEnableSSL: after EnableSSL, verify-full against the CA
// connects over SSL, and fails for an untrusted CA.
func TestPostgresEnableSSL(t *testing.T) {
	pg := testenv.StartPostgres(t)
	f := testenv.WriteTLSFiles(t)
	if err := pg.EnableSSL(f); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.SSLURL("postgres", "", f.CA))
	if err != nil {
		t.Fatalf("verify-full: %v", err)
	}
	defer conn.Close(ctx)
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Error("pg_stat_ssl says the verify-full connection is not encrypted")
	}
	other := testenv.WriteTLSFiles(t)
	if c, err := pgx.Connect(ctx, pg.SSLURL("postgres", "", other.CA)); err == nil {
		c.Close(ctx)
		t.Error("verify-full with an untrusted CA connected")
	}
}
