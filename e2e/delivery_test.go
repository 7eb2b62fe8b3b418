package e2e_test

import (
	"context"
	"testing"
	"time"
)

// TestDelivery: concurrent writers commit 10,000 events in transactions of
// 1-50 over 200 aggregates, with some rolled back. Every committed event
// arrives exactly once, in commit order, as the contract says.
func TestDelivery(t *testing.T) {
	e := newEnv(t)
	e.startRelay()
	w := workload{Writers: 8, Aggregates: 200, Events: 10_000, MaxTx: 50, Rollback: 0.1}.run(context.Background(), t, e.pg)
	js := e.js()
	e.waitStreamCount(js, w.Committed(), 2*time.Minute)
	// Once the slot is confirmed past the last commit, the relay has handled
	// everything: a late duplicate would be in the stream by now.
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	verify(t, readStream(t, js), w)
}
