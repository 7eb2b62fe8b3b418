package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// secureEnv is a Postgres and a nats-server started with natsOpts, with the
// relay config pointing at both but without the relay's credentials yet.
func secureEnv(t *testing.T, natsOpts testenv.NATSOptions) *env {
	t.Helper()
	n := testenv.StartNATS(t, natsOpts)
	return newEnvWith(t, n, n.URL())
}

// jsWith connects to the env's NATS with opts (credentials, TLS).
func (e *env) jsWith(opts ...nats.Option) jetstream.JetStream {
	e.t.Helper()
	nc, err := nats.Connect(e.natsURL, append([]nats.Option{nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		e.t.Fatalf("test client: connect to %s: %v", e.natsURL, err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// insertEvents commits n outbox rows in one transaction.
func (e *env) insertEvents(n int) {
	e.t.Helper()
	err := e.pg.Exec(context.Background(), `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload)
		SELECT 'order', 'o-' || g, 'OrderPlaced', jsonb_build_object('n', g) FROM generate_series(1, $1::int) g`, n)
	if err != nil {
		e.t.Fatal(err)
	}
}

// httpBody returns the status and body of GET http://<addr><path>.
func httpBody(addr, path string) (int, string, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	return resp.StatusCode, string(b), nil
}

// TestSecurityNATSAuthAndTLS: the relay authenticates to a nats-server that
// requires each method in turn, and connects over TLS with a CA alone and
// with a client certificate the server verifies; events reach the stream.
// Each server turns away a client without the credentials (see
// testenv.TestNATSAuthHelpers), so flowing events prove the relay used them.
func TestSecurityNATSAuthAndTLS(t *testing.T) {
	tlsFiles := testenv.WriteTLSFiles(t)
	cases := []struct {
		name  string
		setup func(t *testing.T) (testenv.NATSOptions, string) // server, relay's nats: YAML
	}{
		{"creds", func(t *testing.T) (testenv.NATSOptions, string) {
			o, creds, err := testenv.NATSOperator(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return o, fmt.Sprintf("  creds: %q\n", creds)
		}},
		{"nkey", func(t *testing.T) (testenv.NATSOptions, string) {
			o, seed, err := testenv.NATSNKey(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return o, fmt.Sprintf("  nkey: %q\n", seed)
		}},
		{"user-password", func(t *testing.T) (testenv.NATSOptions, string) {
			return testenv.NATSUserPassword("relay", "pw-Q7x"), "  user: relay\n  password: pw-Q7x\n"
		}},
		{"token", func(t *testing.T) (testenv.NATSOptions, string) {
			return testenv.NATSToken("tok-Z3k"), "  token: tok-Z3k\n"
		}},
		{"tls-ca", func(t *testing.T) (testenv.NATSOptions, string) {
			return testenv.NATSTLS(tlsFiles, false), fmt.Sprintf("  tls:\n    ca: %q\n", tlsFiles.CA)
		}},
		{"tls-client-cert", func(t *testing.T) (testenv.NATSOptions, string) {
			return testenv.NATSTLS(tlsFiles, true), fmt.Sprintf("  tls:\n    ca: %q\n    cert: %q\n    key: %q\n",
				tlsFiles.CA, tlsFiles.ClientCert, tlsFiles.ClientKey)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts, natsYAML := c.setup(t)
			e := secureEnv(t, opts)
			writeFile(t, e.cfgPath, relayConfig{PGURL: e.pg.URL(), NATSURL: e.natsURL, NATS: natsYAML, HTTP: e.httpAddr}.yaml())
			e.startRelay()
			e.insertEvents(25)
			e.waitStreamCount(e.jsWith(opts.ClientOptions...), 25, time.Minute)
		})
	}
}

// TestSecurityPostgresVerifyFull: the relay connects to Postgres with
// ssl=on using sslmode=verify-full and sslrootcert, its replication
// connection is encrypted, and events reach the stream.
func TestSecurityPostgresVerifyFull(t *testing.T) {
	e := newEnv(t)
	f := testenv.WriteTLSFiles(t)
	if err := e.pg.EnableSSL(f); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.cfgPath, relayConfig{PGURL: e.pg.SSLURL("postgres", "", f.CA), NATSURL: e.natsURL, HTTP: e.httpAddr}.yaml())
	e.startRelay()
	e.insertEvents(25)
	e.waitStreamCount(e.js(), 25, time.Minute)

	var ssl bool
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(context.Background(), `SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
		WHERE r.application_name = 'outboxrelay'`).Scan(&ssl)
	if err != nil {
		t.Fatalf("read the relay's replication connection from pg_stat_replication: %v", err)
	}
	if !ssl {
		t.Error("the relay's replication connection is not encrypted (pg_stat_ssl.ssl = false)")
	}
}

// TestSecurityErrors: a wrong NATS password or token, an untrusted CA on
// either side, a missing client certificate and a Postgres host name the
// certificate does not list each keep the relay from becoming ready and
// give an error that names the problem and the fix, in the log and in
// /readyz. Nothing reaches the stream.
func TestSecurityErrors(t *testing.T) {
	tlsFiles := testenv.WriteTLSFiles(t)
	otherCA := testenv.WriteTLSFiles(t)
	cases := []struct {
		name   string
		server testenv.NATSOptions
		nats   string   // relay's nats: YAML
		want   []string // in the log, all of them
		ready  string   // in /readyz
	}{
		{
			name:   "wrong-password",
			server: testenv.NATSUserPassword("relay", "right-pw"),
			nats:   "  user: relay\n  password: wrong-pw\n",
			want:   []string{"Authorization Violation", "check nats.user and nats.password"},
			ready:  "check nats.user and nats.password",
		},
		{
			name:   "wrong-token",
			server: testenv.NATSToken("right-token"),
			nats:   "  token: wrong-token\n",
			want:   []string{"Authorization Violation", "check nats.token"},
			ready:  "check nats.token",
		},
		{
			name:   "untrusted-nats-ca",
			server: testenv.NATSTLS(tlsFiles, false),
			nats:   fmt.Sprintf("  tls:\n    ca: %q\n", otherCA.CA),
			want:   []string{"certificate signed by unknown authority", "set nats.tls.ca to the CA that signed the server's certificate"},
			ready:  "nats.tls.ca",
		},
		{
			name:   "nats-client-cert-missing",
			server: testenv.NATSTLS(tlsFiles, true),
			nats:   fmt.Sprintf("  tls:\n    ca: %q\n", tlsFiles.CA),
			want:   []string{"set nats.tls.cert and nats.tls.key"},
			ready:  "nats.tls.cert",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := secureEnv(t, c.server)
			writeFile(t, e.cfgPath, relayConfig{PGURL: e.pg.URL(), NATSURL: e.natsURL, NATS: c.nats, HTTP: e.httpAddr}.yaml())
			e.expectNotReady(c.want, c.ready)
			e.insertEvents(3)
			if n, err := streamCount(context.Background(), e.jsWith(c.server.ClientOptions...)); err == nil && n != 0 {
				t.Errorf("stream holds %d messages; want none", n)
			}
		})
	}
}

// expectNotReady starts the relay, waits until its output holds every one
// of want, and checks that /readyz answers 503 with ready in its body.
func (e *env) expectNotReady(want []string, ready string) *testenv.Process {
	e.t.Helper()
	p := testenv.StartProcess(e.t, e.bin, "run", "-config", e.cfgPath)
	for _, w := range want {
		if err := p.WaitForOutput(w, 30*time.Second); err != nil {
			e.t.Fatalf("relay output never said %q: %v\n%s", w, err, p.Output())
		}
	}
	var body string
	testenv.WaitFor(e.t, 30*time.Second, "/readyz to name the problem", func() (bool, error) {
		code, b, err := httpBody(e.httpAddr, "/readyz")
		if err != nil {
			return false, err
		}
		body = b
		if code == http.StatusOK {
			e.t.Fatalf("/readyz answers 200 (%q) although the relay cannot connect", b)
		}
		return strings.Contains(b, ready), fmt.Errorf("/readyz says %q, want it to contain %q", b, ready)
	})
	e.t.Logf("/readyz: %s", strings.TrimSpace(body))
	return p
}

// TestSecurityPostgresErrors: with sslmode=verify-full, a server
// certificate that does not list the host name in postgres.url (here
// localhost, while the certificate is for db.internal.example), or one signed by
// a CA other than sslrootcert, keeps the relay from streaming, with an
// error in the log and in /readyz that names the certificate problem.
func TestSecurityPostgresErrors(t *testing.T) {
	cases := []struct {
		name       string
		serverHost string // the only host in the server's certificate; "" for the defaults
		otherCA    bool   // sslrootcert is a CA that did not sign it
		want       []string
	}{
		{name: "wrong-host", serverHost: "db.internal.example", want: []string{"certificate is valid for db.internal.example, not localhost", "use a host name it lists, or sslmode=verify-ca"}},
		{name: "untrusted-ca", otherCA: true, want: []string{"certificate signed by unknown authority", "set sslrootcert in postgres.url"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			var hosts []string
			if c.serverHost != "" {
				hosts = []string{c.serverHost}
			}
			f := testenv.WriteTLSFiles(t, hosts...)
			if err := e.pg.EnableSSL(f); err != nil {
				t.Fatal(err)
			}
			ca := f.CA
			if c.otherCA {
				ca = testenv.WriteTLSFiles(t).CA
			}
			pgURL := strings.Replace(e.pg.SSLURL("postgres", "", ca), "@127.0.0.1:", "@localhost:", 1)
			writeFile(t, e.cfgPath, relayConfig{PGURL: pgURL, NATSURL: e.natsURL, HTTP: e.httpAddr}.yaml())
			e.expectNotReady(c.want, c.want[0])
			e.insertEvents(3)
			if n, err := streamCount(context.Background(), e.js()); err == nil && n != 0 {
				t.Errorf("stream holds %d messages; want none", n)
			}
		})
	}
}
