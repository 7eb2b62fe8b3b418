package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/bench/polling"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// latencyResult is commit→stored latency at one paced rate.
type latencyResult struct {
	rate     int // events/s asked for
	achieved float64
	polling.Quantiles
	lagAfter time.Duration // from the last commit until the stream held everything
	cpu      string        // CPU time per event of each process, as for a drain
}

// liveLatency runs the relay against paced single-event transactions at
// each of -rates for -latency-duration, and measures commit→stored: the
// Outbox-Commit-Time header against the JetStream timestamp of the message.
func liveLatency(o *options) ([]latencyResult, error) {
	rates, dur := o.rates, o.latencyDur
	ctx := context.Background()
	e, err := newBenchEnv(o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if err := e.createSlots(ctx); err != nil {
		return nil, err
	}
	relay, err := e.startRelay()
	if err != nil {
		return nil, err
	}
	defer stopRelay(relay)
	// Measure a running relay, not its start: wait until it streams from
	// its slot and can publish (/readyz), and its stream exists.
	js := e.js
	if err := testenv.Poll(30*time.Second, func() (bool, error) {
		if relay.Exited() {
			return false, errors.New("the relay exited")
		}
		if ok, err := testenv.RelayReady(fmt.Sprintf("127.0.0.1:%d", e.port)); !ok {
			return false, err
		}
		_, err := js.Stream(ctx, "OUTBOX")
		return err == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("the relay did not become ready: %w; its log:\n%s", err, testenv.TailLines(relay.Output(), 40))
	}

	var out []latencyResult
	var total uint64
	roots := map[int]string{e.pg.Pid(): "postgres", e.ns.Pid(): "nats-server", relay.Pid(): "relay"}
	for _, rate := range rates {
		before, start := sampleCPU(roots), time.Now()
		profiled := e.startProfiles(fmt.Sprintf("live-%d", rate))
		p, err := pacedInserts(ctx, e.pg, o.pacedBy, rate, dur)
		if err != nil {
			return nil, err
		}
		n := p.n
		total += uint64(n)
		_, last, err := e.waitStream(relay, total, time.Minute, nil)
		if err != nil {
			return nil, fmt.Errorf("at %d/s the stream did not catch up: %w", rate, err)
		}
		res := latencyResult{rate: rate, achieved: float64(n) / p.elapsed.Seconds(), lagAfter: last.Sub(p.lastCommit)}
		after := sampleCPU(roots)
		for _, pid := range p.backends {
			delete(after, int(pid)) // an exiting backend may still be there
		}
		use := cpuUse(before, after)
		use["inserts"] = p.backendCPU
		res.cpu = formatCPU(use, n, time.Since(start).Seconds())
		if err := profiled(); err != nil {
			return nil, err
		}
		if res.Quantiles, err = latencyQuantiles(ctx, js, total-uint64(n)+1, total, o.csvPath("relay", rate)); err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

// latencyQuantiles summarises the latencies of stream messages
// first..last. With a csv path (-latency-csv) it also writes every event's
// commit time and commit→stored latency there, to see when a tail happened
// and what else happened then.
func latencyQuantiles(ctx context.Context, js jetstream.JetStream, first, last uint64, csv string) (polling.Quantiles, error) {
	lats, commits, err := latencies(ctx, js, first, last, csv)
	if err != nil {
		return polling.Quantiles{}, err
	}
	return polling.Quantiles{P50: quantile(lats, 0.5), P99: quantile(lats, 0.99), P999: quantile(lats, 0.999),
		Max: slices.Max(lats), PerSecond: perSecondMax(lats, commits)}, nil
}

// perSecondMax is the largest latency among the events committed in each
// second from the first commit: a tail that an overall quantile averages
// away, such as a spike every second, shows as a high value in every one.
func perSecondMax(lats []time.Duration, commits []time.Time) []time.Duration {
	start := slices.MinFunc(commits, time.Time.Compare)
	var out []time.Duration
	for i, c := range commits {
		s := int(c.Sub(start) / time.Second)
		for len(out) <= s {
			out = append(out, 0)
		}
		out[s] = max(out[s], lats[i])
	}
	return out
}

// latencies reads stream messages first..last and returns commit→stored
// and the commit time of each; with a csv path it also writes them there.
func latencies(ctx context.Context, js jetstream.JetStream, first, last uint64, csv string) (_ []time.Duration, _ []time.Time, err error) {
	var w *bufio.Writer
	if csv != "" {
		f, err := os.Create(csv)
		if err != nil {
			return nil, nil, err
		}
		w = bufio.NewWriter(f)
		defer func() {
			if werr := errors.Join(w.Flush(), f.Close()); werr != nil && err == nil {
				err = fmt.Errorf("write %s: %w", csv, werr)
			}
		}()
		fmt.Fprintln(w, "stream_seq,commit_unix_ns,stored_unix_ns,latency_us")
	}
	cons, err := js.OrderedConsumer(ctx, "OUTBOX", jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first,
	})
	if err != nil {
		return nil, nil, err
	}
	out := make([]time.Duration, 0, last-first+1)
	commits := make([]time.Time, 0, last-first+1)
	for uint64(len(out)) < last-first+1 {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, nil, err
			}
			committed, err := time.Parse(time.RFC3339Nano, m.Headers().Get("Outbox-Commit-Time"))
			if err != nil {
				return nil, nil, err
			}
			out = append(out, md.Timestamp.Sub(committed))
			commits = append(commits, committed)
			if w != nil {
				fmt.Fprintf(w, "%d,%d,%d,%d\n", md.Sequence.Stream, committed.UnixNano(), md.Timestamp.UnixNano(), md.Timestamp.Sub(committed).Microseconds())
			}
		}
		if got == 0 {
			return nil, nil, fmt.Errorf("read %d of %d messages", len(out), last-first+1)
		}
	}
	return out, commits, nil
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
