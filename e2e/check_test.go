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
	yaml := fmt.Sprintf(`postgres:
  url: %s
  slot: %s
nats:
  url: %s
  stream: %s
http:
  listen: 127.0.0.1:%d
log:
  level: debug
%s`, cc.pgURL, cc.slot, cc.natsURL, stream, port, cc.extra)
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
			active, err := c.slotActive(slot)
			return active, err
		})
		err := c.pg.Exec(context.Background(), `INSERT INTO public.outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', 'o-1', 'OrderPlaced', $1)`, payload)
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (c *checkEnv) slotActive(slot string) (bool, error) {
	conn, err := c.pg.Connect(context.Background())
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var active bool
	err = conn.QueryRow(context.Background(), "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
	return active, err
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

// The fixed texts of check's lines, as the README's Troubleshooting table
// quotes them.
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
	fixPGAuth     = "Postgres refused the login: check the user and password in postgres.url, and that pg_hba.conf allows this role both ordinary and replication connections"
	fixPGDown     = "Postgres is not reachable: check that it is running and that postgres.url names the right host and port"
	fixNATSAuth   = "check the credentials in nats.url"
	fixWALSenders = "raise max_wal_senders in postgresql.conf and restart Postgres, or stop a replication client that is not needed"
	fixNATSDown   = "check nats.url, and that nats-server is running and reachable from here"
	slotLostText  = `replication slot "outboxrelay" is lost (wal_status = lost): Postgres removed WAL it still needed, past max_slot_wal_keep_size, and the events in it are gone: drop the slot with SELECT pg_drop_replication_slot('outboxrelay') and restart the relay, which creates a new one from now; then republish what was missed from the outbox table`
	slotsFullText = `all replication slots are in use (10 of max_replication_slots = 10) and slot "outboxrelay" does not exist yet: raise max_replication_slots in postgresql.conf and restart Postgres, or drop a slot nobody uses with SELECT pg_drop_replication_slot('<name>')`
)

// TestCheckPostgres runs `outboxrelay check` against a real Postgres in
// each state a user can meet, and asserts the exact line and exit code;
// for the states run also meets, it asserts that run says the same.
func TestCheckPostgres(t *testing.T) {
	c := newCheckEnv(t)
	good := c.write(t, checkCfg{})

	// First, before any logical slot exists: Postgres does not start with
	// wal_level=replica while one does.
	t.Run("wal_level replica", func(t *testing.T) {
		c.exec(t, "ALTER SYSTEM SET wal_level = replica")
		c.restartPostgres(t)
		out := c.check(t, good, 1)
		wantLines(t, out,
			"FAIL  postgres wal_level: "+walLevelText,
			"FAIL  postgres slot outboxrelay: does not exist yet, and the relay cannot create it until the problems above are fixed")
		c.runSays(t, good, walLevelText, nil)
		c.exec(t, "ALTER SYSTEM RESET wal_level")
		c.restartPostgres(t)
		c.reset(t)
	})

	t.Run("all good", func(t *testing.T) {
		out := c.check(t, good, 0)
		wantLines(t, out,
			"ok    postgres wal_level: logical",
			`ok    postgres role: "relay" has REPLICATION`,
			"ok    postgres replication slots: 0 of max_replication_slots = 10 in use; the relay needs 1 more",
			"ok    postgres wal senders: 0 of max_wal_senders = 10 in use; the relay needs 1",
			"ok    postgres replication connection: accepted",
			"ok    postgres table public.outbox: has the configured columns (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb, created_at timestamp with time zone)",
			`ok    postgres publication outboxrelay: does not exist yet; the relay will create it: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox"`,
			"ok    postgres slot outboxrelay: does not exist yet; the relay will create it (pgoutput), and events start from then on",
			keepSizeWarn,
			"ok    nats max_payload: 1048576 bytes: an event whose payload and headers are larger halts the relay (errors.invalid_event: halt)",
			"ok    nats jetstream: enabled; the account has 0 streams",
			"ok    nats stream OUTBOX: does not exist yet; the relay will create it with subjects [outbox.>], file storage and limits retention",
			"ready, 1 warning")
		noLine(t, out, "FAIL")
		// check changes nothing.
		if n := c.queryInt(t, "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)"); n != 0 {
			t.Errorf("check left %d slots and publications behind", n)
		}
		if _, err := c.js().Stream(context.Background(), stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("after check, looking up stream %s gives %v, want it not found", stream, err)
		}
	})

	t.Run("two tables and messages", func(t *testing.T) {
		c.exec(t, "CREATE TABLE public.billing (LIKE public.outbox INCLUDING ALL); ALTER TABLE public.billing OWNER TO relay")
		defer c.exec(t, "DROP TABLE public.billing")
		cfg := c.write(t, checkCfg{extra: `outbox:
  tables:
    - {table: outbox}
    - {table: billing, subject: "billing.{aggregate_type}.{aggregate_id}"}
  messages: {prefix: outbox, subject: "msgs.{aggregate_id}"}
`})
		out := c.check(t, cfg, 0)
		wantLines(t, out,
			"ok    postgres table public.outbox: has the configured columns (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb, created_at timestamp with time zone)",
			"ok    postgres table public.billing: has the configured columns (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb, created_at timestamp with time zone)",
			`ok    postgres publication outboxrelay: does not exist yet; the relay will create it: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox", "public"."billing"`,
			"ok    nats stream OUTBOX: does not exist yet; the relay will create it with subjects [outbox.> billing.> msgs.>], file storage and limits retention",
			"ready, 1 warning")
		// The relay creates exactly what check announced.
		relay := testenv.StartProcess(t, c.bin, "run", "-config", cfg)
		c.whenStreaming(t, "outboxrelay", "{}")()
		c.waitStreamCount(c.js(), 1, 30*time.Second)
		if err := relay.Kill(); err != nil {
			t.Fatal(err)
		}
		out = c.check(t, cfg, 0)
		wantLines(t, out, `ok    postgres publication outboxrelay: exists and includes public.outbox, public.billing`)
		if !strings.Contains(out, "ok    nats stream OUTBOX: subjects [outbox.> billing.> msgs.>], Limits retention") {
			t.Errorf("check does not describe the stream the relay created:\n%s", out)
		}
		c.reset(t)
	})

	t.Run("wrong password", func(t *testing.T) {
		const wrong = "not-" + checkPassword
		cfg := c.write(t, checkCfg{pgURL: c.pg.URLFor("relay", wrong)})
		out := c.check(t, cfg, 1)
		port := c.pg.Port()
		wantLines(t, out, fmt.Sprintf("FAIL  postgres: connect to postgres at 127.0.0.1:%d: failed to connect to `user=relay database=postgres`: 127.0.0.1:%d (127.0.0.1): failed SASL auth: FATAL: password authentication failed for user \"relay\" (SQLSTATE 28P01): %s", port, port, fixPGAuth))
		if strings.Contains(out, wrong) {
			t.Errorf("check printed the password:\n%s", out)
		}
		c.runSays(t, cfg, `password authentication failed for user "relay" (SQLSTATE 28P01): `+fixPGAuth, nil)
		c.reset(t)
	})

	t.Run("postgres down", func(t *testing.T) {
		_, port := freeURL(t, "postgres")
		cfg := c.write(t, checkCfg{pgURL: fmt.Sprintf("postgres://relay:%s@127.0.0.1:%d/postgres?sslmode=disable", checkPassword, port)})
		out := c.check(t, cfg, 1)
		wantLines(t, out, fmt.Sprintf("FAIL  postgres: connect to postgres at 127.0.0.1:%d: failed to connect to `user=relay database=postgres`: 127.0.0.1:%d (127.0.0.1): dial error: dial tcp 127.0.0.1:%d: connect: connection refused: %s", port, port, port, fixPGDown))
		// The NATS half is still checked.
		wantLines(t, out, "ok    nats jetstream: enabled; the account has 0 streams")
		c.runSays(t, cfg, fmt.Sprintf("connect to postgres at 127.0.0.1:%d: ", port), nil)
		c.runSays(t, cfg, "connect: connection refused: "+fixPGDown, nil)
		c.reset(t)
	})

	t.Run("role without REPLICATION", func(t *testing.T) {
		c.exec(t, "ALTER ROLE relay NOREPLICATION")
		out := c.check(t, good, 1)
		wantLines(t, out,
			"FAIL  postgres role: "+noReplText,
			"FAIL  postgres slot outboxrelay: does not exist yet, and the relay cannot create it until the problems above are fixed")
		noLine(t, out, "ok    postgres replication connection")
		c.runSays(t, good, noReplText, nil)
		c.exec(t, "ALTER ROLE relay REPLICATION")
		c.reset(t)
	})

	t.Run("no SELECT on the table", func(t *testing.T) {
		c.exec(t, "REVOKE SELECT ON public.outbox FROM relay")
		defer c.exec(t, "GRANT SELECT ON public.outbox TO relay")
		out := c.check(t, good, 0)
		wantLines(t, out, `warn  postgres table public.outbox: role "relay" has no SELECT on public.outbox: streaming does not need it, but outbox.cleanup.after and looking into a halted event's row do: run GRANT SELECT ON "public"."outbox" TO "relay"`)
		// outbox.cleanup.after deletes rows by their columns: it needs both.
		c.exec(t, "REVOKE DELETE ON public.outbox FROM relay")
		defer c.exec(t, "GRANT DELETE ON public.outbox TO relay")
		out = c.check(t, c.write(t, checkCfg{extra: "outbox: {cleanup: {after: 1h}}\n"}), 1)
		wantLines(t, out,
			`FAIL  postgres table public.outbox: role "relay" has no SELECT on public.outbox, which outbox.cleanup.after needs to find confirmed rows: run GRANT SELECT, DELETE ON "public"."outbox" TO "relay"`,
			`FAIL  postgres table public.outbox: role "relay" has no DELETE on public.outbox, which outbox.cleanup.after needs: run GRANT DELETE ON "public"."outbox" TO "relay"`)
	})

	t.Run("missing table", func(t *testing.T) {
		cfg := c.write(t, checkCfg{extra: "outbox: {table: public.missing}\n"})
		out := c.check(t, cfg, 1)
		wantLines(t, out, "FAIL  postgres table public.missing: "+missingTable)
		c.runSays(t, cfg, missingTable, nil)
		c.reset(t)
	})

	t.Run("missing column", func(t *testing.T) {
		cfg := c.write(t, checkCfg{extra: "outbox: {columns: {aggregate_id: agg_id}}\n"})
		out := c.check(t, cfg, 1)
		wantLines(t, out, "FAIL  postgres table public.outbox: "+noColumn+": add the column, or map outbox.columns.aggregate_id to one of its columns (id, aggregatetype, aggregateid, type, payload, created_at)")
		// run meets it at the table's first row, and halts there.
		c.runSays(t, cfg, noColumn, c.whenStreaming(t, "outboxrelay", "{}"))
		c.reset(t)
	})

	t.Run("wrong column type", func(t *testing.T) {
		cfg := c.write(t, checkCfg{extra: "outbox: {columns: {payload: created_at}}\n"})
		out := c.check(t, cfg, 1)
		wantLines(t, out, "FAIL  postgres table public.outbox: "+badPayload+`: the column is timestamp with time zone; change it with ALTER TABLE "public"."outbox" ALTER COLUMN "created_at" TYPE jsonb USING ..., or map outbox.columns.payload to another column`)
		c.runSays(t, cfg, badPayload, c.whenStreaming(t, "outboxrelay", "{}"))
		c.reset(t)
	})

	t.Run("unusual id type", func(t *testing.T) {
		out := c.check(t, c.write(t, checkCfg{extra: "outbox: {columns: {id: created_at}}\n"}), 0)
		wantLines(t, out, `warn  postgres table public.outbox: id (column "created_at") has type timestamp with time zone: the relay uses its text form as the event's id; a text, uuid or integer column is the usual choice`)
	})

	t.Run("publication missing the table", func(t *testing.T) {
		c.exec(t, "CREATE TABLE IF NOT EXISTS public.other (id int); CREATE PUBLICATION outboxrelay FOR TABLE public.other")
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  postgres publication outboxrelay: "+pubNoTable)
		c.runSays(t, good, pubNoTable, nil)
		c.reset(t)
	})

	t.Run("publication cannot be created", func(t *testing.T) {
		c.exec(t, "ALTER TABLE public.outbox OWNER TO postgres")
		defer c.exec(t, "ALTER TABLE public.outbox OWNER TO relay")
		const create = `create it yourself as a superuser: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox"`
		out := c.check(t, good, 1)
		wantLines(t, out, `FAIL  postgres publication outboxrelay: does not exist, and the relay cannot create it: role "relay" does not own public.outbox: `+create)
		c.runSays(t, good, `create publication "outboxrelay" for public.outbox: ERROR: must be owner of table outbox (SQLSTATE 42501) (or `+create+")", nil)
		c.reset(t)
	})

	t.Run("publication without inserts", func(t *testing.T) {
		c.exec(t, "CREATE PUBLICATION outboxrelay FOR TABLE public.outbox WITH (publish = 'update, delete')")
		const noInsert = `publication "outboxrelay" does not publish inserts, so no outbox row would reach the relay: run ALTER PUBLICATION "outboxrelay" SET (publish = 'insert, update, delete, truncate')`
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  postgres publication outboxrelay: "+noInsert)
		c.runSays(t, good, noInsert, nil)
		c.reset(t)
	})

	t.Run("slot of another plugin", func(t *testing.T) {
		c.exec(t, "SELECT pg_create_logical_replication_slot('outboxrelay', 'test_decoding')")
		const plugin = `replication slot "outboxrelay" uses plugin "test_decoding", not pgoutput: set postgres.slot to another name, or drop the slot with SELECT pg_drop_replication_slot('outboxrelay')`
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  postgres slot outboxrelay: "+plugin)
		c.runSays(t, good, "outboxrelay: "+plugin, nil) // and exits: retrying cannot help
		c.reset(t)
	})

	t.Run("slot active", func(t *testing.T) {
		relay := testenv.StartProcess(t, c.bin, "run", "-config", good)
		testenv.WaitFor(t, 30*time.Second, "the relay streaming", func() (bool, error) {
			if relay.Exited() {
				t.Fatalf("relay exited:\n%s", relay.Output())
			}
			return c.slotActive("outboxrelay")
		})
		pid := c.queryInt(t, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'outboxrelay'")
		active := fmt.Sprintf(`replication slot "outboxrelay" is active: PID %d (application_name "outboxrelay", client 127.0.0.1) streams it; a relay started now waits as a standby and takes over when that process stops`, pid)
		out := c.check(t, good, 0)
		wantLines(t, out,
			"warn  postgres slot outboxrelay: "+active,
			"ok    postgres replication slots: 1 of max_replication_slots = 10 in use, the relay's among them",
			`ok    postgres publication outboxrelay: exists and includes public.outbox`)
		if !strings.Contains(out, "ok    postgres slot outboxrelay: exists (pgoutput, this database), active, confirmed up to ") {
			t.Errorf("check does not describe the slot:\n%s", out)
		}
		// A second relay says the same, and waits as a standby.
		c.runSays(t, c.write(t, checkCfg{}), active, nil)
		if err := relay.Kill(); err != nil {
			t.Fatal(err)
		}
		c.reset(t)
	})

	t.Run("no free WAL sender", func(t *testing.T) {
		c.exec(t, "ALTER SYSTEM SET max_wal_senders = 1")
		c.restartPostgres(t)
		defer func() {
			c.exec(t, "ALTER SYSTEM RESET max_wal_senders")
			c.restartPostgres(t)
		}()
		relay := testenv.StartProcess(t, c.bin, "run", "-config", good)
		testenv.WaitFor(t, 30*time.Second, "the relay streaming", func() (bool, error) {
			return c.slotActive("outboxrelay")
		})
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  postgres wal senders: all WAL senders are in use (1 of max_wal_senders = 1): "+fixWALSenders)
		noLine(t, out, "ok    postgres replication connection")
		// A second relay cannot even connect to wait as a standby.
		c.runSays(t, c.write(t, checkCfg{}), "(SQLSTATE 53300): "+fixWALSenders, nil)
		if err := relay.Kill(); err != nil {
			t.Fatal(err)
		}
		c.reset(t)
	})

	t.Run("slot lost", func(t *testing.T) {
		c.exec(t, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
		c.exec(t, "SELECT pg_reload_conf()")
		defer func() {
			c.exec(t, "ALTER SYSTEM RESET max_slot_wal_keep_size")
			c.exec(t, "SELECT pg_reload_conf()")
		}()
		c.exec(t, "SELECT pg_create_logical_replication_slot('outboxrelay', 'pgoutput')")
		c.exec(t, "CREATE TABLE IF NOT EXISTS public.wal_filler (n int)")
		// Write WAL past the limit until a checkpoint invalidates the slot.
		testenv.WaitFor(t, time.Minute, "the slot lost", func() (bool, error) {
			c.exec(t, "INSERT INTO public.wal_filler SELECT generate_series(1, 20000)")
			c.exec(t, "SELECT pg_switch_wal()")
			c.exec(t, "CHECKPOINT")
			return c.queryInt(t, "SELECT count(*)::int FROM pg_replication_slots WHERE wal_status = 'lost'") == 1, nil
		})
		out := c.check(t, good, 1)
		wantLines(t, out,
			"FAIL  postgres slot outboxrelay: "+slotLostText,
			"ok    postgres max_slot_wal_keep_size: is 1MB: past it, Postgres drops WAL the slot needs and its events are lost; alert on outboxrelay_replication_lag_bytes well before")
		c.runSays(t, good, slotLostText, nil)
		c.reset(t)
	})

	t.Run("no free replication slot", func(t *testing.T) {
		// Fill every slot (physical ones are instant to create).
		for i := c.queryInt(t, "SELECT count(*)::int FROM pg_replication_slots"); i < 10; i++ {
			c.exec(t, fmt.Sprintf("SELECT pg_create_physical_replication_slot('filler_%d')", i))
		}
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  postgres replication slots: "+slotsFullText)
		c.runSays(t, good, slotsFullText, nil)
		c.reset(t)
	})
}
