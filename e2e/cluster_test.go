package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestClusterFailover (I2 under a NATS cluster leader change): with an R3
// stream on a 3-node cluster, the stream leader steps down twice, then the
// leader is killed with -9 and later restarted, all while writers commit
// 20,000 events. The step-downs and the kill each hit while the relay
// drains a burst of 20,000 events with its publish window full. The stream
// still holds every committed event exactly once, in commit order.
func TestClusterFailover(t *testing.T) {
	const burstSize = 20_000
	cluster := testenv.StartNATSCluster(t, 3)
	e := newEnvWith(t, nil, cluster.URLs())
	js := e.js()
	ctx := context.Background()

	// The relay would create an R1 stream; it validates an existing one and
	// never changes it, so an R3 stream made here is what it publishes to.
	createOutboxStream(t, js, 3)
	relay := e.startRelay()
	// About 500 transactions per writer, one every ~100ms: the load outlasts
	// the faults and the relay's recovery from each.
	bg := workload{Writers: 4, Aggregates: 200, Events: 20_000, MaxTx: 20, Rollback: 0.05, Hot: 0.3, Pace: 90 * time.Millisecond}.start(ctx, e.pg)
	start := time.Now()
	waitStreamAtLeast(t, js, 2000, time.Minute)

	faults := 0
	var bursts []*written
	// underLoad commits a burst and returns once the relay is publishing
	// it, so that the fault that follows finds many publishes in flight.
	underLoad := func(what string) {
		t.Helper()
		if bg.finished() {
			t.Fatalf("the load finished before %s (%s after it started): the fault would test nothing; slow the load down", what, time.Since(start).Round(time.Millisecond))
		}
		from, err := streamCountWithin(js, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		bursts = append(bursts, burst(t, e, 10_000*(len(bursts)+1), 100, burstSize))
		waitStreamAtLeast(t, js, from+2000, time.Minute)
		n, _ := streamCountWithin(js, 2*time.Second)
		t.Logf("%s at %s: stream holds %d, the relay is publishing a burst of %d", what, time.Since(start).Round(time.Millisecond), n, burstSize)
		faults++
	}

	for i := range 2 {
		underLoad(fmt.Sprintf("step-down %d", i+1))
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		leader, err := cluster.StepDownStream(sctx, stream)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("new stream leader %s", leader.Name())
		// Go on only once the relay publishes again.
		waitStreamGrows(t, js, "the step-down", 1000, time.Minute)
	}

	leader := streamLeaderWithin(t, cluster, 30*time.Second)
	underLoad("kill -9 of stream leader " + leader.Name())
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	// The remaining two nodes elect a leader and the relay must carry on
	// through it, so the stream must grow while the node is down.
	waitStreamGrows(t, js, "the kill", 1000, time.Minute)
	time.Sleep(time.Second) // keep the node down a little longer under load

	if bg.finished() {
		t.Logf("note: the load finished before %s was restarted", leader.Name())
	}
	t.Logf("restart of %s at %s", leader.Name(), time.Since(start).Round(time.Millisecond))
	faults++
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}

	during, err := bg.wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load of %d committed events took %s; %d faults injected", during.Committed(), time.Since(start).Round(time.Millisecond), faults)
	w := merge(append(bursts, during)...)
	waitStreamCountR3(t, js, w.Committed(), 2*time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	logRelayEvents(t, relay)
	verify(t, readStream(t, js), w)
}

// createOutboxStream creates the relay's stream before the relay does, with
// the given replicas and a duplicate window so short that JetStream's msg-id
// deduplication cannot hide a resend: exactly-once must come from the
// publish chain alone.
func createOutboxStream(t *testing.T, js jetstream.JetStream, replicas int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       stream,
		Subjects:   []string{"outbox.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   replicas,
		Duplicates: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("create stream %s with %d replicas: %v", stream, replicas, err)
	}
}

// streamCountWithin is streamCount with its own deadline: during an election
// an R3 stream's info request can go unanswered until its context ends.
func streamCountWithin(js jetstream.JetStream, d time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return streamCount(ctx, js)
}

// waitStreamGrows waits until the stream holds `by` more messages than when
// called, and logs how long that took: how long the relay stalled after
// the fault named in after.
func waitStreamGrows(t *testing.T, js jetstream.JetStream, after string, by uint64, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	var from uint64
	testenv.WaitFor(t, 30*time.Second, "the stream's message count", func() (bool, error) {
		n, err := streamCountWithin(js, time.Second)
		from = n
		return err == nil, err
	})
	waitStreamAtLeast(t, js, from+by, timeout)
	t.Logf("after %s the stream grew from %d by %d within %s", after, from, by, time.Since(start).Round(time.Millisecond))
}

// waitStreamAtLeast waits until the stream holds at least n messages.
func waitStreamAtLeast(t *testing.T, js jetstream.JetStream, n uint64, timeout time.Duration) {
	t.Helper()
	testenv.WaitFor(t, timeout, fmt.Sprintf("at least %d messages in the stream", n), func() (bool, error) {
		got, err := streamCountWithin(js, time.Second)
		if err != nil {
			return false, err
		}
		return got >= n, fmt.Errorf("stream holds %d", got)
	})
}

// waitStreamCountR3 is env.waitStreamCount with a deadline on every poll.
func waitStreamCountR3(t *testing.T, js jetstream.JetStream, n int, timeout time.Duration) {
	t.Helper()
	testenv.WaitFor(t, timeout, fmt.Sprintf("%d messages in the stream", n), func() (bool, error) {
		got, err := streamCountWithin(js, 2*time.Second)
		if err != nil {
			return false, err
		}
		if got > uint64(n) {
			t.Fatalf("stream holds %d messages, more than the %d committed", got, n)
		}
		return got == uint64(n), fmt.Errorf("stream holds %d", got)
	})
}

// streamLeaderWithin returns the node that leads the stream, retrying while
// an election runs.
func streamLeaderWithin(t *testing.T, c *testenv.Cluster, timeout time.Duration) *testenv.NATS {
	t.Helper()
	var leader *testenv.NATS
	testenv.WaitFor(t, timeout, "a stream leader", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := c.StreamLeader(ctx, stream)
		if err != nil {
			return false, err
		}
		leader = n
		return true, nil
	})
	return leader
}

// logRelayEvents logs the relay's lines about its connections and its
// publish chain, to show how it lived through the faults.
func logRelayEvents(t *testing.T, p *testenv.Process) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(p.Output(), "\n") {
		for _, k := range []string{"chain", "NATS", "standby", "streaming", "replication connection", "halted"} {
			if strings.Contains(l, k) {
				lines = append(lines, l)
				break
			}
		}
	}
	if len(lines) > 40 {
		lines = append(lines[:20], append([]string{fmt.Sprintf("... %d more ...", len(lines)-40)}, lines[len(lines)-20:]...)...)
	}
	t.Logf("relay (pid %d) events:\n%s", p.Pid(), strings.Join(lines, "\n"))
}

// burst commits rows events in one transaction, spread in turn over
// aggregates firstAgg.., each aggregate's n counting up in insert order as
// the workload's do, so verify can check them. A burst gives the relay a
// full publish window in flight, where a fault hurts most.
func burst(t *testing.T, e *env, firstAgg, aggregates, rows int) *written {
	t.Helper()
	typs, ids, types, payloads := make([]string, rows), make([]string, rows), make([]string, rows), make([]string, rows)
	pad := strings.Repeat("b", 200)
	for i := range rows {
		a, n := firstAgg+i%aggregates, i/aggregates+1
		typs[i], ids[i] = aggregate(a)
		types[i] = "created"
		if n > 1 {
			types[i] = "updated"
		}
		payloads[i] = fmt.Sprintf(`{"agg": %q, "n": %d, "burst": %d, "pad": %q}`, ids[i], n, firstAgg, pad)
	}
	ctx := context.Background()
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// unnest keeps the arrays' order, so each aggregate's n rises with the
	// position in the transaction.
	r, err := conn.Query(ctx, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
		RETURNING id::text, aggregatetype, aggregateid, type, payload::text`, typs, ids, types, payloads)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w := &written{committed: map[string]sent{}, rolledBack: map[string]bool{}}
	for r.Next() {
		var ev sent
		if err := r.Scan(&ev.ID, &ev.AggType, &ev.AggID, &ev.Type, &ev.Payload); err != nil {
			t.Fatal(err)
		}
		var p struct{ N int }
		if err := json.Unmarshal([]byte(ev.Payload), &p); err != nil {
			t.Fatal(err)
		}
		ev.N = p.N
		w.committed[ev.ID] = ev
	}
	if err := r.Err(); err != nil {
		t.Fatalf("burst of %d events: %v", rows, err)
	}
	if len(w.committed) != rows {
		t.Fatalf("burst inserted %d events, want %d", len(w.committed), rows)
	}
	return w
}
