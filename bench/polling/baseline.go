package polling

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// Baseline runs the polling publisher on w's drains (a backlog of each size
// in ns, in transactions of each size in txs) and paced rates rs, dur each,
// and prints its two tables.
func Baseline(w Workload, cfg Config, ns, txs, rs []int, dur time.Duration) error {
	b := baseline{w: w, cfg: cfg}
	if len(ns) == 0 || len(txs) == 0 {
		return b.latencyTable(rs, dur)
	}
	fmt.Printf("\nPolling baseline: the publisher teams write by hand. Each worker loops: BEGIN; SELECT ... ORDER BY seq\n")
	fmt.Printf("LIMIT %d FOR UPDATE SKIP LOCKED; async publish, wait for every PubAck; DELETE ... WHERE id = ANY($1); COMMIT;\n", cfg.Batch)
	fmt.Printf("it sleeps %s after a poll that finds nothing. Same backlogs, writers, stream, subjects and headers as\n", cfg.Interval)
	fmt.Println("the relay, less the three that need a log position (Outbox-Commit-LSN, Outbox-Tx-Seq, Nats-Expected-Last-")
	fmt.Println("Sequence); the outbox gains an indexed identity column seq. Checked: the stream holds each event once, the")
	fmt.Println("outbox ends empty. Drain: start (connecting included) to the last PubAck. agg order: insert = each")
	fmt.Println("aggregate's events are stored in insert (seq) order, its commit order only if producers serialise writes")
	fmt.Println("per aggregate (the relay keeps commit order regardless); none = several workers' batches race.")
	fmt.Println()
	fmt.Printf("%-12s %9s %8s %14s %10s\n", "events/tx", "events", "workers", "polling ev/s", "agg order")
	row := func(n, tx, workers int) error {
		secs, err := b.drain(n, tx, workers)
		if err != nil {
			return fmt.Errorf("polling baseline, %d events in transactions of %d, %d workers: %w", n, tx, workers, err)
		}
		order := "insert"
		if workers > 1 {
			order = "none"
		}
		fmt.Printf("%-12d %9d %8d %14.0f %10s\n", tx, n, workers, float64(n)/secs, order)
		return nil
	}
	for _, n := range ns {
		for _, tx := range txs {
			if err := row(n, tx, 1); err != nil {
				return err
			}
		}
	}
	if cfg.Workers > 1 && len(ns) > 0 && len(txs) > 0 {
		if err := row(ns[0], txs[0], cfg.Workers); err != nil {
			return err
		}
	}
	return b.latencyTable(rs, dur)
}

// baseline is one Baseline run.
type baseline struct {
	w   Workload
	cfg Config
}

// latencyTable runs and prints the polling baseline's latency runs.
func (b baseline) latencyTable(rs []int, latDur time.Duration) error {
	if len(rs) == 0 {
		return nil
	}
	fmt.Printf("\nPolling baseline live latency, commit -> stored (created_at in Outbox-Commit-Time vs JetStream timestamp),\n")
	fmt.Printf("1 worker, poll interval %s, single-event transactions, %s per rate. created_at is now(), the start of\n", b.cfg.Interval, latDur)
	fmt.Println("the single-INSERT transaction: it also counts the INSERT itself, tens of microseconds here.")
	fmt.Println()
	fmt.Printf("%-10s %12s %10s %10s %10s %10s %14s\n", "target/s", "achieved/s", "p50", "p99", "p99.9", "max", "caught up in")
	lat, err := b.latency(rs, latDur)
	if err != nil {
		return fmt.Errorf("polling baseline latency: %w", err)
	}
	for _, l := range lat {
		fmt.Printf("%-10d %12.0f %10s %10s %10s %10s %14s\n", l.rate, l.achieved, l.P50.Round(10*time.Microsecond), l.P99.Round(10*time.Microsecond), l.P999.Round(10*time.Microsecond), l.Max.Round(10*time.Microsecond), l.lagAfter.Round(10*time.Microsecond))
	}
	return nil
}

// latencyResult is commit→stored latency at one paced rate.
type latencyResult struct {
	rate     int // events/s asked for
	achieved float64
	Quantiles
	lagAfter time.Duration // from the last commit until the stream held everything
}

// pollingRun is a poller working in its own throwaway environment: the
// relay's bench environment plus an indexed insertion-order column, and the
// stream the relay would create (same name, subjects and settings).
type pollingRun struct {
	*poller
	e      *Env
	stop   context.CancelFunc
	errc   chan error // Run's result
	done   bool       // Run's result was received, into runErr
	runErr error
}

// startPolling sets up the environment, calls fill, then starts the
// poller; close releases everything.
func (b baseline) startPolling(ctx context.Context, workers int, fill func(*Env) error) (_ *pollingRun, err error) {
	r := &pollingRun{errc: make(chan error, 1), stop: func() {}}
	if r.e, err = b.w.NewEnv(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	for _, sql := range []string{
		"ALTER TABLE outbox ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY",
		"CREATE INDEX outbox_seq ON outbox (seq)",
	} {
		if err := r.e.PG.Exec(ctx, sql); err != nil {
			return nil, err
		}
	}
	if _, err := sink.EnsureStream(ctx, r.e.JS, "OUTBOX", "outbox"); err != nil {
		return nil, err
	}
	if err := fill(r.e); err != nil {
		return nil, err
	}
	if r.poller, err = newPoller(r.e, b.cfg, workers); err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	go func() { r.errc <- r.Run(runCtx) }()
	return r, nil
}

// halt stops the poller and returns what its Run returned.
func (r *pollingRun) halt() error {
	r.stop()
	if !r.done {
		r.done, r.runErr = true, <-r.errc
	}
	return r.runErr
}

func (r *pollingRun) close() {
	if r.poller != nil {
		r.halt()
	}
	r.e.Close()
}

// finish waits until the poller has published want events and committed
// their deletion (stopping it mid-batch would roll a DELETE back), stops
// it, and checks the stream.
func (r *pollingRun) finish(ctx context.Context, want uint64) error {
	conn, err := r.e.PG.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	left := -1
	err = r.wait(10*time.Minute, func() (bool, error) {
		// Count rows only once all are published: a count(*) over a full
		// outbox would compete with the poller for the CPU.
		if uint64(r.stored.Load()+r.dups.Load()) < want {
			return false, nil
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil {
			return false, err
		}
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d events published, %d rows left in the outbox: %w", r.stored.Load(), want, left, err)
	}
	if err := r.halt(); err != nil {
		return err
	}
	return r.check(ctx, r.e.JS, want)
}

// drain commits a backlog of n events in transactions of txSize, the
// way the relay's drain does, then runs the poller until it is gone. It
// returns the seconds from the poller's start to its last PubAck.
func (b baseline) drain(n, txSize, workers int) (float64, error) {
	ctx := context.Background()
	var start time.Time
	r, err := b.startPolling(ctx, workers, func(e *Env) error {
		err := b.w.Backlog(ctx, e.PG, n, txSize)
		start = time.Now()
		return err
	})
	if err != nil {
		return 0, err
	}
	defer r.close()
	if err := r.finish(ctx, uint64(n)); err != nil {
		return 0, err
	}
	return float64(r.lastAck.Load()-start.UnixNano()) / 1e9, nil
}

// latency runs one poller against the relay's paced single-event
// transactions at each rate and measures commit→stored the way the relay's
// runs do, through the Outbox-Commit-Time header.
func (b baseline) latency(rates []int, dur time.Duration) ([]latencyResult, error) {
	ctx := context.Background()
	r, err := b.startPolling(ctx, 1, func(*Env) error { return nil })
	if err != nil {
		return nil, err
	}
	defer r.close()
	var out []latencyResult
	var total uint64
	for _, rate := range rates {
		p, err := b.w.Paced(ctx, r.e.PG, rate, dur)
		if err != nil {
			return nil, err
		}
		n := p.N
		total += uint64(n)
		var last time.Time // when the stream's last message was stored
		err = r.wait(time.Minute, func() (bool, error) {
			st, err := r.e.JS.Stream(ctx, "OUTBOX")
			if err != nil {
				return false, err
			}
			state := st.CachedInfo().State
			last = state.LastTime
			return state.Msgs >= total, nil
		})
		if err != nil {
			return nil, fmt.Errorf("at %d/s the stream did not catch up: %w", rate, err)
		}
		res := latencyResult{rate: rate, achieved: float64(n) / p.Elapsed.Seconds(), lagAfter: last.Sub(p.LastCommit)}
		if res.Quantiles, err = b.w.Latencies(ctx, r.e.JS, total-uint64(n)+1, total, "polling", rate); err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, r.finish(ctx, total)
}

// wait polls cond like testenv.Poll, but fails at once if the poller stops.
func (r *pollingRun) wait(timeout time.Duration, cond func() (bool, error)) error {
	err := testenv.Poll(timeout, func() (bool, error) {
		select {
		case err := <-r.errc:
			r.done, r.runErr = true, cmp.Or(err, errStoppedEarly)
			return true, nil
		default:
			return cond()
		}
	})
	if r.done {
		return fmt.Errorf("the poller stopped: %w", r.runErr)
	}
	return err
}
