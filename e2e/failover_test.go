package e2e_test

// Postgres failover: a primary with a physical standby, the relay on a
// multi-host URL with target_session_attrs=read-write. The primary is
// killed with -9 and the standby promoted while writers run.

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// haEnv is a primary, its standby, and a relay that follows the primary.
type haEnv struct {
	*env
	primary, standby *testenv.Postgres
}

func newHAEnv(t *testing.T, major int, syncSlots bool) *haEnv {
	t.Helper()
	bin, err := testenv.PostgresBinDirFor(major)
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	primary := testenv.StartPostgres(t, testenv.PostgresOptions{BinDir: bin})
	testenv.CreateOutbox(t, primary)
	opts := testenv.CloneOptions{Standby: true}
	if syncSlots {
		opts.Settings = map[string]string{"sync_replication_slots": "on"}
	}
	standby := testenv.ClonePostgres(t, primary, opts)
	// Synchronous commit: every commit the writers see is on the standby.
	// synchronized_standby_slots: the relay never receives a change the
	// standby has not, so its synced slot is never behind the stream.
	settings := []string{"ALTER SYSTEM SET synchronous_standby_names = 'standby_1'"}
	if syncSlots {
		settings = append(settings, "ALTER SYSTEM SET synchronized_standby_slots = 'standby_1'")
	}
	for _, sql := range append(settings, "SELECT pg_reload_conf()") {
		if err := primary.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{t: t, pg: primary, nats: n, natsURL: n.URL(), bin: testenv.BuildRelay(t)}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e.httpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	e.cfgPath = filepath.Join(t.TempDir(), "outboxrelay.yaml")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write&connect_timeout=2", primary.Port(), standby.Port())
	writeFile(t, e.cfgPath, relayConfig{PGURL: url, NATSURL: e.natsURL, HTTP: e.httpAddr}.yaml())
	return &haEnv{env: e, primary: primary, standby: standby}
}

// slotFlags returns the relay slot's failover and synced flags on pg, and
// whether it exists (as a persistent slot: a standby creates a synced slot
// as temporary until it has caught up, and drops it at promotion).
func slotFlags(t *testing.T, pg *testenv.Postgres) (exists, failover, synced bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, "SELECT true, coalesce((to_jsonb(s) ->> 'failover')::bool, false), coalesce((to_jsonb(s) ->> 'synced')::bool, false) FROM pg_replication_slots s WHERE slot_name = 'outboxrelay' AND NOT temporary").Scan(&exists, &failover, &synced)
	if err != nil && !strings.Contains(err.Error(), "no rows") {
		t.Fatal(err)
	}
	return exists, failover, synced
}

// writer commits one event per transaction to whichever server e.pg is,
// until stop; a commit whose outcome is unknown (the primary died under
// it) is resolved on the promoted standby.
type writer struct {
	ev      *events
	mu      sync.Mutex
	doubt   []sent
	stop    chan struct{}
	done    chan struct{}
	current func() *testenv.Postgres
}

func startWriter(t *testing.T, ev *events, current func() *testenv.Postgres) *writer {
	w := &writer{ev: ev, stop: make(chan struct{}), done: make(chan struct{}), current: current}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			w.one()
		}
	}()
	return w
}

func (w *writer) one() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pg := w.current()
	conn, err := pg.Connect(ctx)
	if err != nil {
		return // down, or in recovery: try again
	}
	defer conn.Close(context.Background())
	s := w.ev.next()
	err = conn.QueryRow(ctx, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text",
		s.AggType, s.AggID, s.Type, s.Payload).Scan(&s.ID)
	w.ev.mu.Lock()
	defer w.ev.mu.Unlock()
	if err == nil {
		w.ev.w.committed[s.ID] = s
		return
	}
	// Unknown: it may have committed on the standby. Its n is taken, so
	// that the aggregate's next event does not reuse it; resolve decides.
	w.mu.Lock()
	w.doubt = append(w.doubt, s)
	w.mu.Unlock()
}

// finish stops the writer and resolves the commits in doubt on pg: those
// that exist count as committed; for the others, the aggregate's later
// events are numbered down by one (n is the test's bookkeeping only).
func (w *writer) finish(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	close(w.stop)
	<-w.done
	ctx := context.Background()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range w.doubt {
		var id string
		err := conn.QueryRow(ctx, "SELECT id::text FROM outbox WHERE payload = $1::jsonb", s.Payload).Scan(&id)
		if err == nil {
			s.ID = id
			w.ev.w.committed[id] = s
			continue
		}
		key := s.AggType + "/" + s.AggID
		for cid, c := range w.ev.w.committed {
			if c.AggType+"/"+c.AggID == key && c.N > s.N {
				c.N--
				w.ev.w.committed[cid] = c
			}
		}
		w.ev.n[key]--
	}
}

// TestFailoverSlot: on PostgreSQL 17 and 18, the relay creates its slot as
// a failover slot; the standby synchronises it. The primary is killed with
// -9 and the standby promoted while writers run: the relay follows the
// primary and every committed event is in the stream exactly once, in
// order.
func TestFailoverSlot(t *testing.T) {
	for _, major := range []int{17, 18} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			h := newHAEnv(t, major, true)
			js := h.js()
			ev := newEvents()
			h.startRelay()
			if _, failover, _ := slotFlags(t, h.primary); !failover {
				t.Fatal("the relay's slot on the primary is not a failover slot")
			}
			if code, out := h.command("check"); code != 0 || !strings.Contains(out, "ok    postgres failover: the slot is, or is created as, a failover slot, and synchronized_standby_slots is standby_1") {
				t.Fatalf("check: exit %d, want 0 and the failover line\n%s", code, out)
			}
			var mu sync.Mutex
			current := h.primary
			w := startWriter(t, ev, func() *testenv.Postgres { mu.Lock(); defer mu.Unlock(); return current })
			testenv.WaitFor(t, time.Minute, "the slot synchronised to the standby", func() (bool, error) {
				exists, _, synced := slotFlags(t, h.standby)
				return exists && synced, fmt.Errorf("on the standby: exists %v, synced %v", exists, synced)
			})
			testenv.WaitFor(t, time.Minute, "some events in the stream", func() (bool, error) {
				n, err := streamCount(context.Background(), js)
				return n >= 300, err
			})
			if err := h.primary.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := h.standby.Promote(context.Background()); err != nil {
				t.Fatal(err)
			}
			promoted := time.Now()
			mu.Lock()
			current = h.standby
			mu.Unlock()
			// Streaming again: ready, and an event written after the
			// promotion has arrived.
			after := ev.insert(t, &env{t: t, pg: h.standby}, 1, false)
			var afterID string
			for id := range after.committed {
				afterID = id
			}
			testenv.WaitFor(t, time.Minute, "an event written after the promotion in the stream", func() (bool, error) {
				return h.hasEvent(afterID)
			})
			t.Logf("PostgreSQL %d: streaming again %s after the promotion", major, time.Since(promoted).Round(10*time.Millisecond))
			time.Sleep(time.Second) // more writes on the new primary
			w.finish(t, h.standby)
			h.waitStreamCount(js, ev.w.Committed(), time.Minute)
			verify(t, readStream(t, js), ev.w)
		})
	}
}

// hasEvent reports whether the relay's /readyz is 200 and the stream holds
// event id.
func (h *haEnv) hasEvent(id string) (bool, error) {
	resp, err := http.Get("http://" + h.httpAddr + "/readyz")
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("readyz %d", resp.StatusCode)
	}
	for _, m := range readStream(h.t, h.js()) {
		if m.Header.Get("Nats-Msg-Id") == id {
			return true, nil
		}
	}
	return false, fmt.Errorf("event %s not in the stream yet", id)
}

// TestPromotionWithoutSyncedSlot: on PostgreSQL 16 a standby has no logical
// slots, so after a promotion the relay's slot is missing. The relay stops
// with the continuity error and never streams from a fresh slot.
func TestPromotionWithoutSyncedSlot(t *testing.T) {
	h := newHAEnv(t, 16, false)
	js := h.js()
	ev := newEvents()
	relay := h.startRelay()
	ev.insert(t, h.env, 100, false)
	h.waitStreamCount(js, 100, time.Minute)
	if err := h.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := h.standby.Promote(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.pg = h.standby
	ev.insert(t, h.env, 50, false)
	h.waitContinuityStop(relay, `replication slot "outboxrelay" is missing`, time.Minute)
	if exists, _, _ := slotFlags(t, h.standby); exists {
		t.Fatal("the relay created a slot on the promoted standby by itself")
	}
	if n, _ := streamCount(context.Background(), js); n != 100 {
		t.Fatalf("stream holds %d messages, want the 100 from before the promotion", n)
	}
	stopHalted(t, relay, recoverCmd)
	// The rows are on the promoted standby: recover publishes them.
	if code, out := h.recover(); code != 0 || !strings.Contains(out, "100 already in stream \"OUTBOX\", 50 published") {
		t.Fatalf("recover: exit %d\n%s", code, out)
	}
	h.startRelay()
	ev.insert(t, h.env, 20, false)
	h.waitStreamCount(js, ev.w.Committed(), time.Minute)
	verify(t, readStream(t, js), ev.w)
}

// TestExistingSlotMadeFailover: on PostgreSQL 17 a slot created without
// FAILOVER (by hand, or by an earlier version) is reported by check, and
// made a failover slot by the relay before it streams.
func TestExistingSlotMadeFailover(t *testing.T) {
	h := newHAEnv(t, 17, true)
	if err := h.primary.Exec(context.Background(), "SELECT pg_create_logical_replication_slot('outboxrelay', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
	code, out := h.command("check")
	if code != 0 || !strings.Contains(out, `warn  postgres failover: slot "outboxrelay" is not a failover slot`) {
		t.Fatalf("check: exit %d, want 0 and a warning that the slot is not a failover slot\n%s", code, out)
	}
	relay := h.startRelay()
	if _, failover, _ := slotFlags(t, h.primary); !failover {
		t.Fatalf("the relay did not make the slot a failover slot:\n%s", relay.Output())
	}
	if !strings.Contains(relay.Output(), "made the replication slot a failover slot") {
		t.Fatalf("the relay does not log that it made the slot a failover slot:\n%s", relay.Output())
	}
}
