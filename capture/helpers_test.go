package capture_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// wait bounds every wait for Postgres or the capture: generous, because the
// machines that run these tests are often slow.
const wait = 30 * time.Second

// watermark is a Positioner that the test moves by hand.
type watermark struct{ lsn atomic.Uint64 }

func (w *watermark) Watermark() pglogrepl.LSN { return pglogrepl.LSN(w.lsn.Load()) }
func (w *watermark) set(lsn pglogrepl.LSN)    { w.lsn.Store(uint64(lsn)) }

// env is a Postgres with the outbox table, and a connection to inspect it.
type env struct {
	t    *testing.T
	pg   *testenv.Postgres
	conn *pgx.Conn
}

// newEnv starts a Postgres with settings and creates the outbox table.
func newEnv(t *testing.T, settings map[string]string) *env {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Settings: settings})
	ctx := context.Background()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	testenv.CreateOutbox(t, pg)
	return &env{t: t, pg: pg, conn: conn}
}

// run starts a capture of the outbox table; zero fields of cfg (and the
// URL and tables always) get test defaults. The returned stop cancels it and checks that Run returned nil;
// cleanup calls it too.
func (e *env) run(cfg capture.Config, pos capture.Positioner) (c *capture.Capture, stop func()) {
	e.t.Helper()
	cfg.URL, cfg.Tables = e.pg.URL(), []string{"public.outbox"}
	if cfg.Publication == "" {
		cfg.Publication = "outbox_pub"
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(e.t.Output(), nil))
	}
	c = capture.New(cfg, pos)
	return c, testenv.RunUntilCleanup(e.t, wait, c.Run)
}

// insert commits one transaction of n outbox rows.
func (e *env) insert(n int) {
	e.t.Helper()
	_, err := e.conn.Exec(context.Background(), `INSERT INTO outbox (aggregatetype, aggregateid, type)
		SELECT 'order', i::text, 'created' FROM generate_series(1, $1) i`, n)
	if err != nil {
		e.t.Fatalf("insert: %v", err)
	}
}

// slot returns the slot's confirmed_flush_lsn and its walsender's PID (0
// when no process streams it).
func (e *env) slot(name string) (confirmed pglogrepl.LSN, pid int) {
	e.t.Helper()
	err := e.conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text, coalesce(active_pid, 0)
		FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&confirmed, &pid)
	if err != nil {
		e.t.Fatalf("read slot %q: %v", name, err)
	}
	return confirmed, pid
}

// waitConfirmed waits until the slot's confirmed_flush_lsn reaches lsn.
func (e *env) waitConfirmed(slot string, lsn pglogrepl.LSN) {
	e.t.Helper()
	testenv.WaitFor(e.t, wait, fmt.Sprintf("slot %q to confirm %s", slot, lsn), func() (bool, error) {
		got, _ := e.slot(slot)
		return got >= lsn, nil
	})
}

// next returns the next message that is not a keepalive.
func next(t *testing.T, c *capture.Capture) capture.Message {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case m := <-c.Messages():
			if m.Kind != capture.Keepalive {
				return m
			}
		case <-timeout:
			t.Fatalf("no message within %s", wait)
		}
	}
}

// started reads the first message of a session and fails unless it is a
// Restart.
func started(t *testing.T, c *capture.Capture) capture.Message {
	t.Helper()
	var m capture.Message
	select {
	case m = <-c.Messages():
	case <-time.After(wait):
		t.Fatalf("no message within %s", wait)
	}
	if m.Kind != capture.Restart {
		t.Fatalf("first message is of kind %d, want Restart", m.Kind)
	}
	return m
}

// txs reads Data messages until n transactions have committed, and fails
// on a Restart: within one session nothing starts over.
func txs(t *testing.T, c *capture.Capture, n int) []capture.Message {
	t.Helper()
	var msgs []capture.Message
	for n > 0 {
		m := next(t, c)
		if m.Kind != capture.Data {
			t.Fatalf("got a message of kind %d after %d data messages, want only data", m.Kind, len(msgs))
		}
		msgs = append(msgs, m)
		if m.Data[0] == 'C' {
			n--
		}
	}
	return msgs
}

// parse decodes a pgoutput message the test needs the fields of.
func parse[T pglogrepl.Message](t *testing.T, m capture.Message) T {
	t.Helper()
	msg, err := pglogrepl.Parse(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := msg.(T)
	if !ok {
		t.Fatalf("got %T, want %T", msg, got)
	}
	return got
}

// types returns the pgoutput message types of msgs, such as "BRIC".
func types(msgs []capture.Message) string {
	b := make([]byte, len(msgs))
	for i, m := range msgs {
		b[i] = m.Data[0]
	}
	return string(b)
}

// commitEnds returns the end position of each transaction in msgs.
func commitEnds(t *testing.T, msgs []capture.Message) []pglogrepl.LSN {
	t.Helper()
	var ends []pglogrepl.LSN
	for _, m := range msgs {
		if m.Data[0] == 'C' {
			ends = append(ends, parse[*pglogrepl.CommitMessage](t, m).TransactionEndLSN)
		}
	}
	return ends
}

// holds checks cond every 50ms for d and fails the test the first time it
// returns an error: how a test shows that something does not happen.
func holds(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); <-tick.C {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
	}
}
