package e2e_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// soak scales the fault tests: OUTBOXRELAY_SOAK=N (make soak) runs N times
// the events and N times the faults. The default, 1, is what CI runs.
var soak = func() int {
	n, err := strconv.Atoi(os.Getenv("OUTBOXRELAY_SOAK"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}()

// faultLoad is the load every fault test runs under: 20,000 events (times
// soak) from four writers, transactions of 1-20, a hot aggregate per
// writer, some rollbacks, paced so that it lasts while faults are injected.
func faultLoad(pace time.Duration) workload {
	return workload{Writers: 4, Aggregates: 200, Events: soak * 20_000, MaxTx: 20, Rollback: 0.05, Hot: 0.3, Pace: pace}
}

// createStream creates the relay's stream before the relay does, with a
// duplicate window so short that JetStream's msg-id deduplication cannot
// hide a resend: exactly-once must come from the publish chain alone.
func (e *env) createStream() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e.js().CreateStream(ctx, jetstream.StreamConfig{
		Name:       stream,
		Subjects:   []string{"outbox.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 100 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatalf("create stream: %v", err)
	}
}

// pause spaces out fault injections; it waits for no condition.
func pause(r *rand.Rand, min, max time.Duration) {
	time.Sleep(min + time.Duration(r.Int64N(int64(max-min))))
}

// finish waits for the load, then for the stream to hold every committed
// event, then checks it exactly.
func (e *env) finish(l *load) *written {
	e.t.Helper()
	w, err := l.wait()
	if err != nil {
		e.t.Fatal(err)
	}
	js := e.js()
	e.waitStreamCount(js, w.Committed(), 3*time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	verify(e.t, readStream(e.t, js), w)
	return w
}

// TestRelayKill9: the relay is killed with kill -9 at ten random moments
// under load and restarted each time.
func TestRelayKill9(t *testing.T) {
	e := newEnv(t)
	e.createStream()
	e.startRelay()
	e.killRelayUnderLoad(faultLoad(40*time.Millisecond), 1, soak*10)
}

// killRelayUnderLoad runs wl and kills the relay with kill -9 at kills
// random moments meanwhile, restarting it each time; then it checks the
// stream holds every committed event exactly once, in order.
func (e *env) killRelayUnderLoad(wl workload, seed uint64, kills int) {
	e.t.Helper()
	r := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	l := wl.start(context.Background(), e.pg)
	for range kills {
		pause(r, 200*time.Millisecond, 2*time.Second)
		if err := e.relay.Kill(); err != nil {
			e.t.Fatal(err)
		}
		e.startRelay()
	}
	loadRunning := !l.finished()
	w := e.finish(l)
	e.t.Logf("%d events committed, relay killed -9 %d times (load still running after the last kill: %v)", w.Committed(), kills, loadRunning)
	if !loadRunning {
		e.t.Error("the load ended before the kills did: slow the load down so every kill lands under load")
	}
}

// TestNATSKill9AndFreeze: nats-server is killed with kill -9 and restarted
// on the same store dir twice, then frozen (SIGSTOP) for longer than the
// publish timeout and resumed, all under load.
func TestNATSKill9AndFreeze(t *testing.T) {
	e := newEnv(t)
	e.createStream()
	e.startRelay()
	r := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	l := faultLoad(40*time.Millisecond).start(context.Background(), e.pg)
	for range soak * 2 {
		pause(r, time.Second, 3*time.Second)
		if err := e.nats.Kill(); err != nil {
			t.Fatal(err)
		}
		pause(r, 500*time.Millisecond, 2*time.Second)
		if err := e.nats.Start(); err != nil {
			t.Fatal(err)
		}
	}
	pause(r, time.Second, 2*time.Second)
	if err := e.nats.Freeze(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second) // longer than the relay's 5 s publish timeout
	if err := e.nats.Thaw(); err != nil {
		t.Fatal(err)
	}
	loadRunning := !l.finished()
	w := e.finish(l)
	t.Logf("scenario 2: %d events committed; nats-server killed -9 twice, frozen 8s once (load still running after the faults: %v)", w.Committed(), loadRunning)
	if !loadRunning {
		t.Error("the load ended before the faults did")
	}
}

// TestPostgresRestart: Postgres is restarted in immediate mode (a crash
// restart) under load. Writers resolve in-doubt commits; the relay
// reconnects and replays from the slot.
func TestPostgresRestart(t *testing.T) {
	e := newEnv(t)
	e.startRelay()
	r := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	wl := faultLoad(30 * time.Millisecond)
	wl.Tolerant = true
	l := wl.start(context.Background(), e.pg)
	restarts := 0
	for ; restarts < soak*2; restarts++ {
		pause(r, 2*time.Second, 4*time.Second)
		if err := e.pg.Stop("immediate"); err != nil {
			t.Fatal(err)
		}
		if err := e.pg.Start(); err != nil {
			t.Fatal(err)
		}
	}
	loadRunning := !l.finished()
	w := e.finish(l)
	t.Logf("scenario 3: %d events committed, %d rolled back or failed; Postgres restarted in immediate mode %d times (load still running after: %v)",
		w.Committed(), len(w.rolledBack), restarts, loadRunning)
	if !loadRunning {
		t.Error("the load ended before the restarts did")
	}
}

// TestNATSDownAMinute: NATS is down for 60 s while inserts go on. The relay
// keeps running and says it is not ready, Postgres retains the WAL, and
// everything drains afterwards.
func TestNATSDownAMinute(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	l := faultLoad(110*time.Millisecond).start(context.Background(), e.pg)
	time.Sleep(2 * time.Second) // let events flow first
	if err := e.nats.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	testenv.WaitFor(t, 20*time.Second, "/readyz to say not ready", func() (bool, error) {
		ok, err := e.ready()
		return !ok && err == nil, err
	})
	// Events acked just before the kill are confirmed at the next standby
	// status (every second); after that the slot must not move at all.
	var held pglogrepl.LSN
	testenv.WaitFor(t, 20*time.Second, "the slot to settle", func() (bool, error) {
		prev := held
		time.Sleep(2500 * time.Millisecond) // two status intervals
		held, _ = e.slotLSNs()
		return held == prev, nil
	})
	var maxLag int64
	for time.Since(down) < 60*time.Second {
		if relay.Exited() {
			t.Fatalf("the relay exited while NATS was down:\n%s", relay.Output())
		}
		if ok, _ := e.ready(); ok {
			t.Fatal("/readyz is 200 while NATS is down")
		}
		confirmed, current := e.slotLSNs()
		if confirmed > held {
			t.Fatalf("the slot moved from %s to %s while NATS was down", held, confirmed)
		}
		maxLag = max(maxLag, int64(current-confirmed))
		time.Sleep(500 * time.Millisecond) // sampling the invariant over the outage
	}
	if maxLag < 1<<20 {
		t.Errorf("WAL retained during the outage peaked at %d bytes; the load should have written more", maxLag)
	}
	if err := e.nats.Start(); err != nil {
		t.Fatal(err)
	}
	loadRunning := !l.finished()
	w := e.finish(l)
	t.Logf("scenario 4: %d events committed; NATS down 60s, WAL retained up to %d KiB, everything drained (load still running at the restart: %v)", w.Committed(), maxLag>>10, loadRunning)
}
