package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// latencyResult is commit→stored latency at one paced rate.
type latencyResult struct {
	rate           int // events/s asked for
	achieved       float64
	p50, p99, p999 time.Duration
	lagAfter       time.Duration // from the last commit until the stream held everything
	cpu            string        // CPU time per event of each process, as for a drain
}

// liveLatency runs the relay against paced single-event transactions at
// each rate for dur, and measures commit→stored: the Outbox-Commit-Time
// header against the JetStream timestamp of the message.
func liveLatency(rates []int, dur time.Duration) ([]latencyResult, error) {
	ctx := context.Background()
	e, err := newBenchEnv()
	if err != nil {
		return nil, err
	}
	defer e.close()
	relay, err := e.startRelay()
	if err != nil {
		return nil, err
	}
	defer stopRelay(relay)
	js := e.js
	if err := testenv.Poll(30*time.Second, func() (bool, error) {
		_, err := js.Stream(ctx, "OUTBOX")
		return err == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("the relay did not create its stream: %w", err)
	}

	var out []latencyResult
	var total uint64
	roots := map[int]string{e.pg.Pid(): "postgres", e.ns.Pid(): "nats-server", relay.Pid(): "relay"}
	for _, rate := range rates {
		before, start := sampleCPU(roots), time.Now()
		profiled := make(chan error, 1)
		if profile != "" {
			go func() { profiled <- saveProfile(e.port, fmt.Sprintf("%s-live-%d.pprof", profile, rate)) }()
		} else {
			profiled <- nil
		}
		n, elapsed, lastCommit, err := pacedInserts(ctx, e.pg, rate, dur)
		if err != nil {
			return nil, err
		}
		total += uint64(n)
		if err := e.waitStream(relay, total, time.Minute); err != nil {
			return nil, fmt.Errorf("at %d/s the stream did not catch up: %w", rate, err)
		}
		res := latencyResult{rate: rate, achieved: float64(n) / elapsed.Seconds(), lagAfter: time.Since(lastCommit)}
		res.cpu = formatCPU(cpuUse(before, sampleCPU(roots)), n, time.Since(start).Seconds())
		if err := <-profiled; err != nil {
			return nil, err
		}
		lats, err := latencies(ctx, js, total-uint64(n)+1, total)
		if err != nil {
			return nil, err
		}
		res.p50, res.p99, res.p999 = quantile(lats, 0.5), quantile(lats, 0.99), quantile(lats, 0.999)
		out = append(out, res)
	}
	return out, nil
}

// pacedInserts commits single-event transactions at rate per second for
// dur, from enough connections to keep up.
func pacedInserts(ctx context.Context, pg *testenv.Postgres, rate int, dur time.Duration) (n int, elapsed time.Duration, last time.Time, err error) {
	const writers = 8
	pad := strings.Repeat("x", 200)
	interval := time.Duration(int64(time.Second) * writers / int64(rate))
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pg.Connect(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			next := start.Add(time.Duration(w) * interval / writers)
			for i := 0; time.Since(start) < dur; i++ {
				time.Sleep(time.Until(next)) // pacing the load, not waiting for a condition
				next = next.Add(interval)
				_, err := conn.Exec(ctx, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
					VALUES ('order', $1, 'OrderUpdated', jsonb_build_object('n', $2::int, 'pad', $3::text))`,
					fmt.Sprintf("agg-%d", (w*100000+i)%10000), i, pad)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				n++
				last = time.Now()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, time.Time{}, err
	}
	return n, time.Since(start), last, nil
}

// latencies reads stream messages first..last and returns commit→stored
// for each.
func latencies(ctx context.Context, js jetstream.JetStream, first, last uint64) ([]time.Duration, error) {
	cons, err := js.OrderedConsumer(ctx, "OUTBOX", jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first,
	})
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, last-first+1)
	for uint64(len(out)) < last-first+1 {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			committed, err := time.Parse(time.RFC3339Nano, m.Headers().Get("Outbox-Commit-Time"))
			if err != nil {
				return nil, err
			}
			out = append(out, md.Timestamp.Sub(committed))
		}
		if got == 0 {
			return nil, fmt.Errorf("read %d of %d messages", len(out), last-first+1)
		}
	}
	return out, nil
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
