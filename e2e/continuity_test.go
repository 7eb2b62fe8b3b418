package e2e_test

// Continuity (I7): the relay refuses to stream when it cannot prove that
// its slot continues where its stream ends, and outboxrelay recover
// publishes what the outbox table still holds, exactly once.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/schema"
)

// events writes outbox events one per transaction on ten aggregates, each
// aggregate's n counting on across calls, and remembers them for verify.
type events struct {
	mu sync.Mutex
	w  *written
	n  map[string]int // by aggregate type/id
	i  int
	// table is where insert writes; "" is outbox.
	table string
}

func newEvents() *events {
	return &events{w: &written{committed: map[string]sent{}, rolledBack: map[string]bool{}}, n: map[string]int{}}
}

// next numbers the next event: the next of ten aggregates in turn, and its
// n among that aggregate's events.
func (ev *events) next() sent {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	ev.i++
	typ, id := aggregate(ev.i % 10)
	ev.n[typ+"/"+id]++
	return sent{AggType: typ, AggID: id, Type: "created", N: ev.n[typ+"/"+id], Payload: fmt.Sprintf(`{"i": %d}`, ev.i)}
}

// insert commits count events; with deleted, each transaction deletes its
// row again (the insert-then-delete cleanup), and the events are returned
// without being remembered when lost is set.
func (ev *events) insert(t *testing.T, e *env, count int, deleted bool) *written {
	t.Helper()
	ctx := context.Background()
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	batch := &written{committed: map[string]sent{}, rolledBack: map[string]bool{}}
	for range count {
		s := ev.next()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		table := ev.table
		if table == "" {
			table = "outbox"
		}
		if err := tx.QueryRow(ctx, "INSERT INTO "+table+" (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text",
			s.AggType, s.AggID, s.Type, s.Payload).Scan(&s.ID); err != nil {
			t.Fatal(err)
		}
		if deleted {
			if _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE id = $1::uuid", s.ID); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		batch.committed[s.ID] = s
		ev.mu.Lock()
		ev.w.committed[s.ID] = s
		ev.mu.Unlock()
	}
	return batch
}

// forget drops events that are lost for good from what verify expects,
// and numbers each aggregate's later events on from before them.
func (ev *events) forget(lost *written) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for id, s := range lost.committed {
		delete(ev.w.committed, id)
		ev.n[s.AggType+"/"+s.AggID]--
	}
}

// startWith starts the relay, commits n events and waits until the stream
// holds them (and nothing else).
func (e *env) startWith(js jetstream.JetStream, ev *events, n int, deleted bool) *testenv.Process {
	e.t.Helper()
	relay := e.startRelay()
	ev.insert(e.t, e, n, deleted)
	e.waitStreamCount(js, n, time.Minute)
	return relay
}

// streamOn starts the relay, commits n more events, and checks that the
// stream holds every event ev remembers exactly once, in order.
func (e *env) streamOn(js jetstream.JetStream, ev *events, n int, deleted bool) {
	e.t.Helper()
	e.startRelay()
	ev.insert(e.t, e, n, deleted)
	e.waitStreamCount(js, ev.w.Committed(), time.Minute)
	verify(e.t, readStream(e.t, js), ev.w)
}

// readyz returns /readyz's status code and body.
func (e *env) readyz() (int, string, error) {
	resp, err := http.Get("http://" + e.httpAddr + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitContinuityStop waits until the relay reports that continuity is
// lost, with want in the reason, and checks that it says so everywhere.
// The reason gives the recovery command unless the stop is one that
// recovery cannot fix.
func (e *env) waitContinuityStop(relay *testenv.Process, want string, timeout time.Duration) {
	e.t.Helper()
	testenv.WaitFor(e.t, timeout, "readyz says continuity lost", func() (bool, error) {
		if relay.Exited() {
			return false, fmt.Errorf("relay exited:\n%s", relay.Output())
		}
		code, body, err := e.readyz()
		if err != nil {
			return false, err
		}
		return code == http.StatusServiceUnavailable && strings.Contains(body, "continuity lost"), fmt.Errorf("readyz %d %q", code, body)
	})
	_, body, _ := e.readyz()
	if !strings.Contains(body, want) {
		e.t.Fatalf("readyz says %q; want it to name %q", body, want)
	}
	if m := e.metrics(); !strings.Contains(m, "outboxrelay_continuity_lost 1") || !strings.Contains(m, "outboxrelay_halted 1") {
		e.t.Fatalf("metrics do not report the stop:\n%s", grepLines(m, "outboxrelay_continuity_lost", "outboxrelay_halted"))
	}
}

// stopHalted stops a relay that halted: it exits 1, having logged fix (the
// recovery command, say).
func stopHalted(t *testing.T, relay *testenv.Process, fix string) {
	t.Helper()
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := relay.Wait(40 * time.Second)
	if err != nil || code != 1 {
		t.Fatalf("halted relay after SIGTERM: exit %d (want 1), %v\n%s", code, err, relay.Output())
	}
	if !strings.Contains(relay.Output(), fix) {
		t.Fatalf("the relay's log does not say %q:\n%s", fix, relay.Output())
	}
}

const recoverCmd = "outboxrelay recover -config FILE"

func (e *env) stopRelay(relay *testenv.Process) {
	e.t.Helper()
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		e.t.Fatal(err)
	}
	if code, err := relay.Wait(40 * time.Second); err != nil || code != 0 {
		e.t.Fatalf("relay after SIGTERM: exit %d, %v\n%s", code, err, relay.Output())
	}
}

// recover runs outboxrelay recover and returns its exit code and output.
func (e *env) recover(args ...string) (int, string) {
	e.t.Helper()
	return e.command("recover", args...)
}

// command runs an outboxrelay command on the config and returns its exit
// code and output.
func (e *env) command(name string, args ...string) (int, string) {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{name, "-config", e.cfgPath}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return 0, string(out)
}

func (e *env) slotExists() bool {
	e.t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outboxrelay'").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n > 0
}

func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestSlotDroppedRowsKept: the slot is dropped while the relay is stopped,
// and events are committed before and after. The relay refuses to stream
// and never creates a slot by itself; recover publishes the missed events
// from the table, with writers running, and the relay streams on: every
// event exactly once, in order.
func TestSlotDroppedRowsKept(t *testing.T) {
	e := newEnv(t)
	js := e.js()
	ev := newEvents()
	relay := e.startWith(js, ev, 500, false)
	e.stopRelay(relay)

	if err := e.pg.Exec(context.Background(), "SELECT pg_drop_replication_slot('outboxrelay')"); err != nil {
		t.Fatal(err)
	}
	ev.insert(t, e, 300, false)
	if code, out := e.command("check"); code != 1 || !strings.Contains(out, `FAIL  continuity: continuity lost: replication slot "outboxrelay" is missing`) {
		t.Fatalf("check after the slot was dropped: exit %d, want 1 and the continuity line\n%s", code, out)
	}

	relay = testenv.StartProcess(t, e.bin, "run", "-config", e.cfgPath)
	e.waitContinuityStop(relay, `replication slot "outboxrelay" is missing`, 30*time.Second)
	if e.slotExists() {
		t.Fatal("the relay created a new slot by itself")
	}
	if n, _ := streamCount(context.Background(), js); n != 500 {
		t.Fatalf("stream holds %d messages after the continuity stop, want the 500 from before", n)
	}
	stopHalted(t, relay, recoverCmd)

	// Writers keep committing through the recovery and the restart.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			ev.insert(t, e, 10, false)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	code, out := e.recover()
	if code != 0 {
		t.Fatalf("recover: exit %d\n%s", code, out)
	}
	t.Logf("recover said:\n%s", out)
	if !strings.Contains(out, "500 already in stream") {
		t.Fatalf("recover should find the 500 events already in the stream:\n%s", out)
	}
	if code, out := e.command("check"); code != 0 || !strings.Contains(out, `ok    continuity: slot "outboxrelay" continues where stream "OUTBOX" ends`) {
		t.Fatalf("check after recover: exit %d, want 0 and continuity ok\n%s", code, out)
	}
	e.startRelay()
	wg.Wait()
	e.waitStreamCount(js, ev.w.Committed(), time.Minute)
	verify(t, readStream(t, js), ev.w)
}

// TestSlotDroppedInsertThenDelete: as above, but every transaction deletes
// its row again, so the events committed while the slot was missing are
// gone for good. recover says so and refuses to continue without
// -accept-gap; with it, the relay streams on and later events arrive.
func TestSlotDroppedInsertThenDelete(t *testing.T) {
	e := newEnv(t)
	js := e.js()
	ev := newEvents()
	relay := e.startWith(js, ev, 200, true)
	e.stopRelay(relay)
	if err := e.pg.Exec(context.Background(), "SELECT pg_drop_replication_slot('outboxrelay')"); err != nil {
		t.Fatal(err)
	}
	lost := ev.insert(t, e, 100, true)
	ev.forget(lost)

	relay = testenv.StartProcess(t, e.bin, "run", "-config", e.cfgPath)
	e.waitContinuityStop(relay, `replication slot "outboxrelay" is missing`, 30*time.Second)
	stopHalted(t, relay, recoverCmd)

	code, out := e.recover()
	if code != 1 || !strings.Contains(out, "cannot be recovered") || !strings.Contains(out, "-accept-gap") {
		t.Fatalf("recover without -accept-gap: exit %d, want 1 with the gap and the flag named\n%s", code, out)
	}
	if e.slotExists() {
		t.Fatal("recover refused, but created a slot")
	}
	code, out = e.recover("-accept-gap")
	if code != 0 || !strings.Contains(out, "continued past an unrecoverable gap") {
		t.Fatalf("recover -accept-gap: exit %d\n%s", code, out)
	}
	t.Logf("recover -accept-gap said:\n%s", out)
	e.startRelay()
	ev.insert(t, e, 150, true)
	e.waitStreamCount(js, 350, time.Minute)
	verify(t, readStream(t, js), ev.w)
}

// TestStreamFromAnotherCluster: a relay pointed at another cluster (or a
// restored backup) than the one its stream was filled from refuses to
// stream.
func TestStreamFromAnotherCluster(t *testing.T) {
	e := newEnv(t)
	js := e.js()
	relay := e.startRelay()
	newEvents().insert(t, e, 50, false)
	e.waitStreamCount(js, 50, time.Minute)
	e.stopRelay(relay)

	other := testenv.StartPostgres(t)
	testenv.CreateOutbox(t, other)
	e.refusedAt(other, "from Postgres cluster", "point postgres.url at the database the stream was filled from")
}

// refusedAt points the relay at pg, which cannot continue its stream: run
// stops with the continuity error that says want and fix, and recover
// refuses too.
func (e *env) refusedAt(pg *testenv.Postgres, want, fix string) {
	e.t.Helper()
	writeFile(e.t, e.cfgPath, relayConfig{PGURL: pg.URL(), NATSURL: e.natsURL, HTTP: e.httpAddr}.yaml())
	relay := testenv.StartProcess(e.t, e.bin, "run", "-config", e.cfgPath)
	e.waitContinuityStop(relay, want, 30*time.Second)
	stopHalted(e.t, relay, fix)
	if code, out := e.recover(); code != 1 || !strings.Contains(out, "recovery cannot continue this stream") {
		e.t.Fatalf("recover: exit %d, want 1 and a refusal\n%s", code, out)
	}
}

// TestPublicationChangedWhileStreaming: under load, the outbox table is
// dropped from the publication, re-created, or renamed, and events are
// committed that the slot never delivers. The relay stops within 30 s, the
// slot is not confirmed past the last good check, and once the table is
// back in the publication, recover publishes the rows.
func TestPublicationChangedWhileStreaming(t *testing.T) {
	for _, tc := range []struct {
		name          string
		change, after []string // SQL: the change, and what makes the table usable again
		table         string   // where events go after the change
		recover       []string // recover's flags
	}{
		{name: "dropped from the publication",
			change: []string{"ALTER PUBLICATION outboxrelay DROP TABLE outbox"},
			after:  []string{"ALTER PUBLICATION outboxrelay ADD TABLE outbox"}},
		// The rows of the stream's last events went with the old table, so
		// recovery cannot prove that no row committed to it after the last
		// check was lost: it needs -accept-gap.
		{name: "re-created",
			change:  []string{"DROP TABLE outbox", schema.Outbox},
			after:   []string{"ALTER PUBLICATION outboxrelay ADD TABLE outbox"},
			recover: []string{"-accept-gap"}},
		{name: "renamed",
			change: []string{"ALTER TABLE outbox RENAME TO outbox_old"},
			after:  []string{"ALTER TABLE outbox_old RENAME TO outbox"},
			table:  "outbox_old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			js := e.js()
			ev := newEvents()
			relay := e.startWith(js, ev, 200, false)

			ctx := context.Background()
			for _, sql := range tc.change {
				if err := e.pg.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			changed := e.currentLSN()
			start := time.Now()
			ev.table = tc.table
			during := ev.insert(t, e, 100, false) // never delivered by the slot
			ev.table = ""
			e.waitContinuityStop(relay, "changed while streaming", 30*time.Second)
			t.Logf("continuity stop %s after the change", time.Since(start).Round(100*time.Millisecond))
			if confirmed, _ := e.slotLSNs(); confirmed > changed {
				t.Fatalf("slot confirmed to %s, past the change at %s", confirmed, changed)
			}
			stopHalted(t, relay, recoverCmd)
			for _, sql := range tc.after {
				if err := e.pg.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			missed := ev.insert(t, e, 100, false) // committed before recovery: only recover can publish them
			code, out := e.recover(tc.recover...)
			if want := len(during.committed) + len(missed.committed); code != 0 || !strings.Contains(out, fmt.Sprintf(" %d published", want)) {
				t.Fatalf("recover: exit %d, want 0 with %d published\n%s", code, want, out)
			}
			t.Logf("recover said:\n%s", out)
			e.streamOn(js, ev, 50, false)
		})
	}
}

// insertOneTx commits count events in one transaction.
func (ev *events) insertOneTx(t *testing.T, e *env, count int) {
	t.Helper()
	ctx := context.Background()
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var batch []sent
	for range count {
		s := ev.next()
		if err := tx.QueryRow(ctx, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text",
			s.AggType, s.AggID, s.Type, s.Payload).Scan(&s.ID); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, s)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, s := range batch {
		ev.w.committed[s.ID] = s
	}
}

// TestBackfillExisting: with outbox.backfill: existing, the rows already in
// the table when the relay first creates its slot are published once and
// first, then everything committed later, with writers running through the
// start: the migration from a polling publisher.
func TestBackfillExisting(t *testing.T) {
	e := newEnv(t)
	e.writeConfig("outbox:\n  backfill: existing\n")
	js := e.js()
	ev := newEvents()
	ev.insertOneTx(t, e, 10_000)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 40 {
			ev.insert(t, e, 10, false)
		}
	}()
	relay := e.startRelay()
	wg.Wait()
	e.waitStreamCount(js, ev.w.Committed(), 2*time.Minute)
	verify(t, readStream(t, js), ev.w)
	if !strings.Contains(relay.Output(), "backfilled the rows already in the outbox tables") {
		t.Fatalf("the relay does not log the backfill:\n%s", relay.Output())
	}

	// A restart backfills nothing again.
	e.stopRelay(relay)
	ev.insert(t, e, 20, false)
	e.startRelay()
	e.waitStreamCount(js, ev.w.Committed(), time.Minute)
	verify(t, readStream(t, js), ev.w)
}

// TestSlotInvalidated: while NATS is down the relay is killed with events
// it could not publish, and the slot falls behind past
// max_slot_wal_keep_size until Postgres invalidates it. Once NATS is back
// the relay stops with the continuity error, and recover publishes the rows
// still in the table.
func TestSlotInvalidated(t *testing.T) {
	n := testenv.StartNATS(t)
	e := newEnvWith(t, n, n.URL(), testenv.PostgresOptions{Settings: map[string]string{"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB"}})
	js := e.js()
	ev := newEvents()
	relay := e.startWith(js, ev, 100, false)

	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	ev.insert(t, e, 200, false)
	if err := relay.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.pg.Exec(ctx, "CREATE TABLE wal_filler (n int)"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Minute, "the slot invalidated", func() (bool, error) {
		for _, sql := range []string{"INSERT INTO wal_filler SELECT generate_series(1, 20000)", "SELECT pg_switch_wal()", "CHECKPOINT"} {
			if err := e.pg.Exec(ctx, sql); err != nil {
				return false, err
			}
		}
		conn, err := e.pg.Connect(ctx)
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		var status string
		err = conn.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'outboxrelay'").Scan(&status)
		return status == "lost", fmt.Errorf("wal_status %q (%v)", status, err)
	})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	relay = testenv.StartProcess(t, e.bin, "run", "-config", e.cfgPath)
	e.waitContinuityStop(relay, "was invalidated by Postgres", 90*time.Second)
	// The halted relay still reports the slot: lost, and no process on it
	// (the OutboxRelaySlotWALAtRisk alert), with no safe_wal_size left.
	var m string
	testenv.WaitFor(t, 30*time.Second, "the lost slot on /metrics", func() (bool, error) {
		m = e.metrics()
		ok := strings.Contains(m, "outboxrelay_slot_wal_status{status=\"lost\"} 1\n") && strings.Contains(m, "outboxrelay_slot_active 0\n")
		return ok, fmt.Errorf("/metrics says\n%s", grepLines(m, "outboxrelay_slot"))
	})
	if strings.Contains(m, "outboxrelay_slot_safe_wal_size_bytes") {
		t.Errorf("a lost slot has a safe_wal_size:\n%s", grepLines(m, "outboxrelay_slot"))
	}
	stopHalted(t, relay, recoverCmd)

	code, out := e.recover()
	if code != 0 || !strings.Contains(out, "100 already in stream \"OUTBOX\", 200 published") {
		t.Fatalf("recover: exit %d, want 0 with the 200 rows the stream lacked published\n%s", code, out)
	}
	t.Logf("recover said:\n%s", out)
	e.streamOn(js, ev, 50, false)
}

// TestStreamAheadOfRestoredBackup: the database is restored from a backup
// taken before the stream's last events (same cluster, earlier WAL). The
// relay pointed at it refuses to stream, and so does recover.
func TestStreamAheadOfRestoredBackup(t *testing.T) {
	e := newEnv(t)
	js := e.js()
	ev := newEvents()
	relay := e.startWith(js, ev, 100, false)
	backup := testenv.ClonePostgres(t, e.pg, testenv.CloneOptions{})
	ev.insert(t, e, 200, false)
	e.waitStreamCount(js, 300, time.Minute)
	e.stopRelay(relay)

	e.refusedAt(backup, "ahead of the server's current WAL position", "the database is a restored backup, or another cluster")
}

// TestRecoverPartitionedOutbox: recovery from a partitioned outbox table,
// in chunks far smaller than the table, so that chunk boundaries fall
// between partitions' rows: every event exactly once, in order.
func TestRecoverPartitionedOutbox(t *testing.T) {
	e := newEnv(t)
	partitionOutbox(t, e)
	js := e.js()
	ev := newEvents()
	relay := e.startWith(js, ev, 300, false)
	e.stopRelay(relay)
	if err := e.pg.Exec(context.Background(), "SELECT pg_drop_replication_slot('outboxrelay')"); err != nil {
		t.Fatal(err)
	}
	ev.insertOneTx(t, e, 250) // one transaction: its rows tie on xmin
	ev.insert(t, e, 150, false)
	code, out := e.recover("-chunk", "37")
	if code != 0 || !strings.Contains(out, "700 rows in the outbox tables, 300 already in stream \"OUTBOX\", 400 published") {
		t.Fatalf("recover: exit %d\n%s", code, out)
	}
	e.streamOn(js, ev, 50, false)
}
