// Package e2e_test runs the relay binary as a black box against real
// Postgres and real nats-server processes, and checks what reaches the stream.
package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

const stream = "OUTBOX"

// env is one Postgres, one nats-server and the relay's config.
type env struct {
	t        *testing.T
	pg       *testenv.Postgres
	nats     *testenv.NATS // nil when natsURL points at a cluster
	natsURL  string
	bin      string
	cfgPath  string
	httpAddr string
	relay    *testenv.Process
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := testenv.StartNATS(t)
	return newEnvWith(t, n, n.URL())
}

// newEnvWith is newEnv with NATS already running at natsURL (one URL or a
// comma-separated cluster list); n may be nil. pgOpts, at most one, start
// Postgres.
func newEnvWith(t *testing.T, n *testenv.NATS, natsURL string, pgOpts ...testenv.PostgresOptions) *env {
	t.Helper()
	e := &env{t: t, pg: testenv.StartPostgres(t, pgOpts...), nats: n, natsURL: natsURL, bin: testenv.BuildRelay(t)}
	testenv.CreateOutbox(t, e.pg)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e.httpAddr = "127.0.0.1:" + strconv.Itoa(port)
	e.cfgPath = filepath.Join(t.TempDir(), "outboxrelay.yaml")
	e.writeConfig("")
	return e
}

// relayConfig is a relay config file's text: every e2e test writes its
// config through it, so a change to the config's shape is made once.
type relayConfig struct {
	PGURL    string
	Postgres string // extra YAML under postgres:, each line indented by two spaces
	NATSURL  string
	NATS     string // extra YAML under nats:, each line indented by two spaces
	HTTP     string // http.listen
	LogLevel string // default debug
	Format   string // log.format, default text
	Extra    string // top-level YAML after the rest
	Stream   string // nats.stream, default stream
}

func (c relayConfig) yaml() string {
	level, format, name := c.LogLevel, c.Format, c.Stream
	if name == "" {
		name = stream
	}
	if level == "" {
		level = "debug"
	}
	if format == "" {
		format = "text"
	}
	return fmt.Sprintf("postgres:\n  url: %q\n%snats:\n  url: %q\n  stream: %s\n%shttp:\n  listen: %s\nlog:\n  level: %s\n  format: %s\n%s",
		c.PGURL, c.Postgres, c.NATSURL, name, c.NATS, c.HTTP, level, format, c.Extra)
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeConfig writes the relay's config; extra is appended YAML.
func (e *env) writeConfig(extra string) {
	e.writeConfigTo(e.cfgPath, e.httpAddr, extra)
}

// writeConfigTo writes a relay config to path with its own HTTP address,
// for a second relay on the same servers.
func (e *env) writeConfigTo(path, httpAddr, extra string) {
	writeFile(e.t, path, relayConfig{PGURL: e.pg.URL(), NATSURL: e.natsURL, HTTP: httpAddr, Extra: extra}.yaml())
}

// startRelay starts the relay and waits until it is ready.
func (e *env) startRelay() *testenv.Process {
	e.t.Helper()
	e.relay = testenv.StartProcess(e.t, e.bin, "run", "-config", e.cfgPath)
	testenv.WaitFor(e.t, 30*time.Second, "relay ready", func() (bool, error) {
		if e.relay.Exited() {
			return false, fmt.Errorf("relay exited:\n%s", e.relay.Output())
		}
		return e.ready()
	})
	return e.relay
}

func (e *env) ready() (bool, error) { return testenv.RelayReady(e.httpAddr) }

func (e *env) js() jetstream.JetStream {
	e.t.Helper()
	nc, err := nats.Connect(e.natsURL, nats.MaxReconnects(-1))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js
}

// streamCount returns how many messages the stream holds.
func streamCount(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	return streamCountOf(ctx, js, stream)
}

// streamCountOf returns how many messages stream name holds.
func streamCountOf(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// waitStreamCount waits until the stream holds exactly n messages.
func (e *env) waitStreamCount(js jetstream.JetStream, n int, timeout time.Duration) {
	e.t.Helper()
	testenv.WaitFor(e.t, timeout, fmt.Sprintf("%d messages in the stream", n), func() (bool, error) {
		got, err := streamCount(context.Background(), js)
		if err != nil {
			return false, err
		}
		if got > uint64(n) {
			e.t.Fatalf("stream holds %d messages, more than the %d committed", got, n)
		}
		return got == uint64(n), fmt.Errorf("stream holds %d", got)
	})
}

// slotLSNs returns the slot's confirmed_flush_lsn and the server's current WAL position.
func (e *env) slotLSNs() (confirmed, current pglogrepl.LSN) {
	e.t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var c, cur string
	err = conn.QueryRow(context.Background(),
		"SELECT coalesce(confirmed_flush_lsn, '0/0')::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = 'outboxrelay'").Scan(&c, &cur)
	if err != nil {
		e.t.Fatalf("read slot: %v", err)
	}
	confirmed, _ = pglogrepl.ParseLSN(c)
	current, _ = pglogrepl.ParseLSN(cur)
	return confirmed, current
}

// waitConfirmedPast waits until the slot confirmed at least lsn: the relay
// has processed everything committed before it.
func (e *env) waitConfirmedPast(lsn pglogrepl.LSN, timeout time.Duration) {
	e.t.Helper()
	testenv.WaitFor(e.t, timeout, "slot confirmed past "+lsn.String(), func() (bool, error) {
		c, _ := e.slotLSNs()
		return c >= lsn, fmt.Errorf("confirmed_flush_lsn %s", c)
	})
}

func (e *env) currentLSN() pglogrepl.LSN {
	_, cur := e.slotLSNs()
	return cur
}
