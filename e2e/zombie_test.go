package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestZombie: relay A is cut from Postgres, by a frozen link, while it can
// still publish, under load. Postgres ends A's silent session after
// wal_sender_timeout and standby B takes the slot, replaying what A had not
// confirmed. A, the zombie, publishes what it holds at the same time as B:
// its NATS link was frozen too, with a window of sends on the wire, and
// heals the moment B streams. The stream holds every event exactly once,
// in commit order, and A, once its Postgres link heals, waits as a standby.
func TestZombie(t *testing.T) {
	p := startPair(t)
	e, js, pgp, np, a, addrB := p.e, p.js, p.pgp, p.np, p.a, p.addrB

	ctx := context.Background()
	bg := workload{Writers: 2, Aggregates: 50, Events: 15_000, MaxTx: 20, Rollback: 0.05, Pace: 50 * time.Millisecond}.start(ctx, e.pg)
	waitStreamAtLeast(t, js, 1000, time.Minute)
	np.Freeze()
	time.Sleep(2 * time.Second) // A reads on and sends into the frozen link
	pgp.Freeze()
	cut := time.Now()
	testenv.WaitFor(t, time.Minute, "relay B streaming", func() (bool, error) {
		return testenv.RelayReady(addrB)
	})
	t.Logf("relay B streaming %s after relay A was cut from Postgres", time.Since(cut).Round(100*time.Millisecond))
	if bg.finished() {
		t.Fatal("the load finished before B took over: A and B would not publish at the same time; slow the load down")
	}
	np.Thaw() // the zombie publishes beside B

	w, err := bg.wait()
	if err != nil {
		t.Fatal(err)
	}
	waitAllOrSayMissing(t, js, w)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	verify(t, readStream(t, js), w)

	pgp.Thaw()
	testenv.WaitFor(t, time.Minute, "relay A waiting as a standby", func() (bool, error) {
		if a.Exited() {
			t.Fatalf("relay A exited:\n%s", a.Output())
		}
		return strings.Contains(a.Output(), standbyLine), nil
	})
	if ok, err := testenv.RelayReady(addrB); !ok {
		t.Fatalf("relay B is not ready after A came back: %v", err)
	}
}
