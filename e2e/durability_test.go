package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestAckAfterDurable (I1): while nats-server is down, the slot must not be
// confirmed past the commits of events that are not stored. Once it is back
// on the same store dir, everything arrives.
func TestAckAfterDurable(t *testing.T) {
	e := newEnv(t)
	e.startRelay()
	ctx := context.Background()
	first := workload{Writers: 2, Aggregates: 20, Events: 200, MaxTx: 10}.run(ctx, t, e.pg)
	js := e.js()
	e.waitStreamCount(js, first.Committed(), time.Minute)

	if err := e.nats.Kill(); err != nil {
		t.Fatal(err)
	}
	before := e.currentLSN()
	second := workload{Writers: 2, Aggregates: 20, FirstAgg: 1000, Events: 300, MaxTx: 10}.run(ctx, t, e.pg)
	// Watch the slot for a few seconds: it must stay below every new commit.
	deadline := time.Now().Add(4 * time.Second)
	for samples := 0; time.Now().Before(deadline); samples++ {
		if confirmed, _ := e.slotLSNs(); confirmed > before {
			t.Fatalf("after %d samples: slot confirmed %s, past %s, while nats-server was down", samples, confirmed, before)
		}
		time.Sleep(100 * time.Millisecond) // sampling an invariant over time, not waiting for a condition
	}
	if ok, _ := e.ready(); ok {
		t.Error("/readyz is 200 while nats-server is down")
	}

	if err := e.nats.Start(); err != nil {
		t.Fatal(err)
	}
	js = e.js()
	all := merge(first, second)
	e.waitStreamCount(js, all.Committed(), 2*time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	verify(t, readStream(t, js), all)
}

// TestRestart: SIGTERM mid-stream exits 0; events inserted while the relay is
// down arrive after it restarts; nothing is lost or duplicated.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	ctx := context.Background()
	js := e.js()
	bg := workload{Writers: 4, Aggregates: 100, Events: 4000, MaxTx: 20, Rollback: 0.05, Pace: 2 * time.Millisecond}.start(ctx, e.pg)
	// Stop it while events are flowing.
	testenv.WaitFor(t, time.Minute, "some events in the stream", func() (bool, error) {
		n, err := streamCount(ctx, js)
		return n >= 500, err
	})
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := relay.Wait(40 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("relay after SIGTERM: exit %d, %v\n%s", code, err, relay.Output())
	}
	stopped, _ := streamCount(ctx, js)
	// More events, on other aggregates, while the relay is down.
	during := workload{Writers: 2, Aggregates: 50, FirstAgg: 1000, Events: 1000, MaxTx: 20, Rollback: 0.05}.run(ctx, t, e.pg)
	e.startRelay()
	before, err := bg.wait()
	if err != nil {
		t.Fatal(err)
	}
	w := merge(before, during)
	e.waitStreamCount(js, w.Committed(), 2*time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	t.Logf("stream held %d events at the stop; %d committed in all", stopped, w.Committed())
	verify(t, readStream(t, js), w)
}

// TestIdleSlotAdvances (I5): with the outbox idle while another table writes
// tens of MB of WAL, the slot keeps up so Postgres can recycle WAL.
func TestIdleSlotAdvances(t *testing.T) {
	e := newEnv(t)
	e.startRelay()
	ctx := context.Background()
	if err := e.pg.Exec(ctx, "CREATE TABLE busy (id bigserial PRIMARY KEY, pad text)"); err != nil {
		t.Fatal(err)
	}
	_, before := e.slotLSNs()
	for range 8 { // about 8 x 6 MB of WAL
		if err := e.pg.Exec(ctx, "INSERT INTO busy (pad) SELECT repeat('y', 100) FROM generate_series(1, 40000)"); err != nil {
			t.Fatal(err)
		}
	}
	confirmed, current := e.slotLSNs()
	t.Logf("after the writes: WAL at %s, slot at %s (lag %d MB)", current, confirmed, (current-confirmed)>>20)
	// On a slow machine the slot may keep up during the writes already; what
	// matters is that there was a lot of WAL to keep up with.
	if current-before < 20<<20 {
		t.Fatalf("the test wrote only %d bytes of WAL; it needs tens of MB to mean anything", current-before)
	}
	start := time.Now()
	testenv.WaitFor(t, 90*time.Second, "slot lag under 4 MB", func() (bool, error) {
		c, cur := e.slotLSNs()
		return cur-c < 4<<20, fmt.Errorf("lag %d bytes", cur-c)
	})
	t.Logf("slot caught up in %s", time.Since(start).Round(100*time.Millisecond))
}

func merge(ws ...*written) *written {
	out := &written{committed: map[string]sent{}, rolledBack: map[string]bool{}}
	for _, w := range ws {
		for k, v := range w.committed {
			out.committed[k] = v
		}
		for k := range w.rolledBack {
			out.rolledBack[k] = true
		}
	}
	return out
}

// TestStreamDeletedWhileRunning: someone deletes the relay's stream while it
// runs. The events it held are gone, and the relay must say so and stop,
// not carry on quietly. The documented fix is a restart: the relay then
// carries on into the stream from the slot's position, which is past the
// events the old stream had stored.
func TestStreamDeletedWhileRunning(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	js := e.js()
	for i := range 3 {
		e.insertRow("order", "o-1", fmt.Sprintf("step-%d", i), `{}`)
	}
	e.waitStreamCount(js, 3, time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)

	ctx := context.Background()
	if err := js.DeleteStream(ctx, "OUTBOX"); err != nil {
		t.Fatal(err)
	}
	after := []string{e.insertRow("order", "o-1", "step-3", `{}`), e.insertRow("order", "o-1", "step-4", `{}`)}
	if err := relay.WaitForOutput("lost events it had acknowledged", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"its last sequence is 0 but the relay saw sequence 3 stored", "restart the relay"} {
		if !strings.Contains(relay.Output(), want) {
			t.Errorf("relay output lacks %q:\n%s", want, grepLine(relay.Output(), "lost events"))
		}
	}
	if m := e.metrics(); !strings.Contains(m, "outboxrelay_halted 1\n") {
		t.Errorf("metrics do not report the halt:\n%s", grepLine(m, "outboxrelay_halted"))
	}
	if ok, err := e.ready(); ok || err != nil {
		t.Errorf("/readyz: ready=%v (%v) after the halt, want not ready", ok, err)
	}
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := relay.Wait(30 * time.Second); err != nil || code != 1 {
		t.Errorf("the halted relay stopped with exit code %d (%v), want 1", code, err)
	}

	e.startRelay()
	e.waitStreamCount(js, 2, time.Minute)
	msgs := readStream(t, js)
	if len(msgs) != 2 {
		t.Fatalf("the new stream holds %d messages, want the 2 written after the deletion", len(msgs))
	}
	for i, want := range after {
		if got := msgs[i].Header.Get("Nats-Msg-Id"); got != want {
			t.Errorf("message %d is %s, want %s", i, got, want)
		}
	}
}
