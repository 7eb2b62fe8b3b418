package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
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
			`ok    postgres publication outboxrelay: does not exist yet; the relay will create it: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox" WITH (publish_via_partition_root = true)`,
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
			`ok    postgres publication outboxrelay: does not exist yet; the relay will create it: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox", "public"."billing" WITH (publish_via_partition_root = true)`,
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
		const create = `create it yourself as a superuser: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox" WITH (publish_via_partition_root = true)`
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
			return c.slotStreaming("outboxrelay")
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
			return c.slotStreaming("outboxrelay")
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
