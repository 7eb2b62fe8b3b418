package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// checkPassword is the relay role's Postgres password. It must never appear
// in check's or run's output (I6).
const checkPassword = "chk-Pw-51d3e"

// checkEnv is a Postgres with the outbox table owned by the role "relay"
// (LOGIN REPLICATION, password auth, CREATE on the database: everything the
// relay needs), a nats-server with JetStream, and the relay binary.
type checkEnv struct {
	*env
	dir   string
	addrs map[string]string // HTTP address of each config file
}

func newCheckEnv(t *testing.T) *checkEnv {
	t.Helper()
	c := &checkEnv{env: newEnv(t), dir: t.TempDir(), addrs: map[string]string{}}
	err := c.pg.Exec(context.Background(), `CREATE ROLE relay LOGIN REPLICATION PASSWORD '`+checkPassword+`' IN ROLE `+testenv.PasswordAuthRole+`;
		ALTER TABLE public.outbox OWNER TO relay;
		GRANT CREATE ON DATABASE postgres TO relay`)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkCfg is a relay configuration for the role "relay"; zero fields take
// the check env's defaults.
type checkCfg struct {
	pgURL, natsURL string
	slot           string
	extra          string // more top-level YAML sections
}

// write writes the configuration to a new file and returns its path.
func (c *checkEnv) write(t *testing.T, cc checkCfg) string {
	t.Helper()
	if cc.pgURL == "" {
		cc.pgURL = c.pg.URLFor("relay", checkPassword)
	}
	if cc.natsURL == "" {
		cc.natsURL = c.natsURL
	}
	if cc.slot == "" {
		cc.slot = "outboxrelay"
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	yaml := relayConfig{
		PGURL: cc.pgURL, Postgres: "  slot: " + cc.slot + "\n",
		NATSURL: cc.natsURL,
		HTTP:    fmt.Sprintf("127.0.0.1:%d", port),
		Extra:   cc.extra,
	}.yaml()
	f, err := os.CreateTemp(c.dir, "check-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(yaml); err != nil {
		t.Fatal(err)
	}
	c.addrs[f.Name()] = fmt.Sprintf("127.0.0.1:%d", port)
	return f.Name()
}

// check runs `outboxrelay check` on cfg, fails the test unless it exits
// with code, and returns its standard output.
func (c *checkEnv) check(t *testing.T, cfg string, code int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, "check", "-config", cfg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	got := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		got = exit.ExitCode()
	case err != nil:
		t.Fatalf("run check: %v", err)
	}
	all := stdout.String() + stderr.String()
	if got != code {
		t.Errorf("check exited with %d, want %d; output:\n%s", got, code, all)
	}
	if strings.Contains(all, checkPassword) {
		t.Errorf("check printed the Postgres password:\n%s", all)
	}
	if code == 1 && !strings.Contains(stderr.String(), "outboxrelay: not ready: ") {
		t.Errorf("check's stderr does not say it is not ready:\n%s", stderr.String())
	}
	return stdout.String()
}

// wantLines fails the test unless every line of want is a line of out.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for l := range strings.Lines(out) {
		have[strings.TrimSuffix(l, "\n")] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("check output lacks the line\n\t%s\noutput:\n%s", w, out)
		}
	}
}

// noLine fails the test if a line of out starts with prefix.
func noLine(t *testing.T, out, prefix string) {
	t.Helper()
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, prefix) {
			t.Errorf("check output has the line\n\t%s\nand should not; output:\n%s", strings.TrimSpace(l), out)
		}
	}
}

// runSays starts `outboxrelay run` on cfg, calls trigger (if not nil), and
// waits until the relay says text: in its output, as is or quoted as a log
// value, or in its /readyz answer.
func (c *checkEnv) runSays(t *testing.T, cfg, text string, trigger func()) {
	t.Helper()
	p := testenv.StartProcess(t, c.bin, "run", "-config", cfg)
	defer func() {
		if !p.Exited() {
			_ = p.Kill()
		}
	}()
	if trigger != nil {
		trigger()
	}
	quoted := strconv.Quote(text)
	quoted = quoted[1 : len(quoted)-1]
	readyz := ""
	says := func() bool {
		out := p.Output()
		if strings.Contains(out, text) || strings.Contains(out, quoted) {
			return true
		}
		if resp, err := http.Get("http://" + c.addrs[cfg] + "/readyz"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			readyz = string(b)
		}
		return strings.Contains(readyz, text)
	}
	_ = testenv.Poll(30*time.Second, func() (bool, error) { return says() || p.Exited(), nil })
	if !says() {
		t.Errorf("run does not say\n\t%s\nits /readyz says %q; its output:\n%s", text, readyz, p.Output())
	}
	if strings.Contains(p.Output()+readyz, checkPassword) {
		t.Errorf("run printed the Postgres password:\n%s", p.Output())
	}
}

// whenStreaming returns a trigger that waits until the relay streams slot,
// then inserts one outbox row.
func (c *checkEnv) whenStreaming(t *testing.T, slot, payload string) func() {
	return func() {
		t.Helper()
		testenv.WaitFor(t, 30*time.Second, "the relay streaming slot "+slot, func() (bool, error) {
			return c.slotStreaming(slot)
		})
		err := c.pg.Exec(context.Background(), `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'OrderPlaced', $1)`, payload)
		if err != nil {
			t.Fatal(err)
		}
	}
}

// slotStreaming reports whether a walsender streams slot: it holds the slot
// and is past START_REPLICATION. The slot is active while a relay creates it
// too, then inactive for a moment until START_REPLICATION takes it again, so
// "active" alone does not say that the relay streams.
func (c *checkEnv) slotStreaming(slot string) (bool, error) {
	conn, err := c.pg.Connect(context.Background())
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var streaming bool
	err = conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
		WHERE s.slot_name = $1 AND r.state IN ('catchup', 'streaming'))`, slot).Scan(&streaming)
	return streaming, err
}

// queryInt runs a query that returns one integer, as the superuser.
func (c *checkEnv) queryInt(t *testing.T, sql string) int {
	t.Helper()
	conn, err := c.pg.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (c *checkEnv) exec(t *testing.T, sql string) {
	t.Helper()
	if err := c.pg.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// reset drops every replication slot, the publication and the streams, so
// the next case starts from a database the relay has never seen.
func (c *checkEnv) reset(t *testing.T) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, "no active replication slot", func() (bool, error) {
		n := c.queryInt(t, "SELECT count(*)::int FROM pg_replication_slots WHERE active")
		return n == 0, fmt.Errorf("%d active", n)
	})
	c.exec(t, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots; DROP PUBLICATION IF EXISTS outboxrelay`)
	c.resetNATS(t, c.natsURL)
}

func (c *checkEnv) resetNATS(t *testing.T, url string) {
	t.Helper()
	js := jsAt(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name := range js.StreamNames(ctx).Name() {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatalf("delete stream %s: %v", name, err)
		}
	}
}

func jsAt(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (c *checkEnv) restartPostgres(t *testing.T) {
	t.Helper()
	if err := c.pg.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	if err := c.pg.Start(); err != nil {
		t.Fatal(err)
	}
}

func freeURL(t *testing.T, scheme string) (string, int) {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), port
}

// The fixed texts of check's lines, as docs/troubleshooting.md quotes them.
const (
	keepSizeWarn  = "warn  postgres max_slot_wal_keep_size: is -1 (unlimited): while the relay is down or halted its slot keeps all WAL, which can fill the disk and stop Postgres: set max_slot_wal_keep_size to the WAL you can afford to keep (past it Postgres drops the slot's WAL and its events are lost), and alert on outboxrelay_replication_lag_bytes"
	walLevelText  = "wal_level is replica, logical decoding needs logical: set wal_level = logical in postgresql.conf (or run ALTER SYSTEM SET wal_level = logical) and restart Postgres"
	noReplText    = `role "relay" may not start logical replication: run ALTER ROLE "relay" WITH REPLICATION as a superuser (on Amazon RDS or Aurora: GRANT rds_replication TO "relay")`
	missingTable  = "outbox table public.missing does not exist: create it, or correct the table name in the config (schema.name; names are case-sensitive)"
	pubNoTable    = `publication "outboxrelay" does not include table public.outbox: run ALTER PUBLICATION "outboxrelay" ADD TABLE "public"."outbox" (or point postgres.publication at another publication)`
	noColumn      = `outbox table public.outbox has no column "agg_id" (outbox.columns.aggregate_id)`
	badPayload    = `payload (column "created_at") has type OID 1184; supported payload types are json, jsonb, text, varchar, char, name and bytea (not domains over them)`
	notCovered    = `stream "OUTBOX" has subjects [other.>], which do not cover "outbox.>": add "outbox.>" to the stream's subjects, or point nats.stream at another stream`
	sharedStream  = `stream "OUTBOX", sequence 1, subject "outbox.billing.7": stream is shared with another writer: it has no valid Outbox-Commit-LSN/Outbox-Tx-Seq headers; the relay must be the stream's only writer: give it its own stream (nats.stream), and use JetStream sources or mirrors to combine streams`
	sourcesOthers = `stream "OUTBOX" sources streams [SHARD2], so JetStream writes their messages into it, and the relay must be its stream's only writer: remove the sources from stream "OUTBOX" and put them on a stream of their own that sources it too (docs/fan-in.md), or point nats.stream at another stream`
	fixPGAuth     = "Postgres refused the login: check the user and password in postgres.url, and that pg_hba.conf allows this role both ordinary and replication connections"
	fixPGDown     = "Postgres is not reachable: check that it is running and that postgres.url names the right host and port"
	fixNATSAuth   = "check the credentials in nats.url"
	fixWALSenders = "raise max_wal_senders in postgresql.conf and restart Postgres, or stop a replication client that is not needed"
	fixNATSDown   = "check nats.url, and that nats-server is running and reachable from here"
	slotLostText  = `replication slot "outboxrelay" is lost (wal_status = lost): Postgres removed WAL it still needed, past max_slot_wal_keep_size, and the events in it are gone: run outboxrelay recover -config FILE, which creates the slot again and publishes the outbox rows still in the table that the stream lacks`
	slotsFullText = `all replication slots are in use (10 of max_replication_slots = 10) and slot "outboxrelay" does not exist yet: raise max_replication_slots in postgresql.conf and restart Postgres, or drop a slot nobody uses with SELECT pg_drop_replication_slot('<name>')`
)
