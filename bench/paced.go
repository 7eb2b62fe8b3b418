package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// The latency runs' load: single-event transactions committed at a fixed
// rate. By default Postgres itself commits them, from a procedure, so the
// load costs the machine what the inserts cost Postgres and no more. On the
// 2-core machine shared with nats-server and the relay, a client doing the
// same over TCP took about 40% of a core of its own at 5k/s, and its
// backends about 60% more: an application's load, which in production runs
// on other machines. -paced-by client keeps that client.

// paced is what one paced run committed.
type paced struct {
	n          int
	elapsed    time.Duration
	lastCommit time.Time
	backendCPU float64  // CPU seconds of the inserting backends
	backends   []uint32 // their pids: counted here, not again under postgres
}

// pacedInserts commits single-event transactions at rate per second for
// dur; by (-paced-by) is postgres or client.
func pacedInserts(ctx context.Context, pg *testenv.Postgres, by string, rate int, dur time.Duration) (paced, error) {
	writers := 8 // the client's connections
	if by == "postgres" {
		writers = (rate + perProcedure - 1) / perProcedure
	}
	conns := make([]*pgx.Conn, writers)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	for w := range conns {
		var err error
		if conns[w], err = pg.Connect(ctx); err != nil {
			return paced{}, err
		}
	}
	var res paced
	var err error
	if by == "postgres" {
		res, err = procedurePaced(ctx, conns, rate, dur)
	} else {
		res, err = clientPaced(ctx, conns, rate, dur)
	}
	if err != nil {
		return paced{}, err
	}
	for _, c := range conns {
		res.backends = append(res.backends, c.PgConn().PID())
	}
	res.backendCPU = backendCPU(res.backends)
	return res, nil
}

// pacedProc commits one outbox insert per transaction, the i-th (from 0)
// due offset_s + i/rate seconds after start, until secs. pg_sleep waits
// whole milliseconds, so a writer ahead of time sleeps to the next
// millisecond and then commits what has come due back to back, as an
// application's bursts would.
const pacedProc = `CREATE OR REPLACE PROCEDURE bench_paced_inserts(
	start timestamptz, rate float8, secs float8, offset_s float8, worker int,
	INOUT n int DEFAULT 0, INOUT last_commit timestamptz DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
	pad text := repeat('x', 200);
	due float8;
	ahead float8;
BEGIN
	LOOP
		due := offset_s + n / rate;
		EXIT WHEN due >= secs;
		ahead := due - extract(epoch FROM clock_timestamp() - start);
		IF ahead > 0 THEN
			PERFORM pg_sleep(ahead);
		END IF;
		INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
			VALUES ('order', 'agg-' || ((worker * 100000 + n) % 10000), 'OrderUpdated',
				jsonb_build_object('n', n, 'pad', pad));
		COMMIT;
		n := n + 1;
		last_commit := clock_timestamp();
	END LOOP;
END $$`

// perProcedure is the rate one procedure is asked to keep; above it the
// load is split over more backends.
const perProcedure = 5000

// procedurePaced runs pacedProc on each of conns, rate/len(conns) each.
func procedurePaced(ctx context.Context, conns []*pgx.Conn, rate int, dur time.Duration) (paced, error) {
	if _, err := conns[0].Exec(ctx, pacedProc); err != nil {
		return paced{}, fmt.Errorf("create the paced-insert procedure: %w", err)
	}
	type done struct {
		n    int
		last time.Time
		err  error
	}
	results := make(chan done, len(conns))
	start := time.Now()
	per := float64(rate) / float64(len(conns))
	for w, c := range conns {
		go func() {
			var d done
			// Simple protocol: a CALL that commits must be at top level.
			d.err = c.QueryRow(ctx, `CALL bench_paced_inserts($1, $2, $3, $4, $5)`, pgx.QueryExecModeSimpleProtocol,
				start, per, dur.Seconds(), float64(w)/float64(rate), w).Scan(&d.n, &d.last)
			results <- d
		}()
	}
	var res paced
	var err error
	for range conns {
		d := <-results
		if d.err != nil && err == nil {
			err = fmt.Errorf("paced inserts: %w", d.err)
		}
		res.n += d.n
		if d.last.After(res.lastCommit) {
			res.lastCommit = d.last
		}
	}
	res.elapsed = time.Since(start)
	return res, err
}

// clientPaced commits single-event transactions at rate per second for dur
// from this process, one writer per connection.
func clientPaced(ctx context.Context, conns []*pgx.Conn, rate int, dur time.Duration) (paced, error) {
	writers := len(conns)
	pad := strings.Repeat("x", 200)
	interval := time.Duration(int64(time.Second) * int64(writers) / int64(rate))
	var mu sync.Mutex
	var wg sync.WaitGroup
	var res paced
	errs := make(chan error, writers)
	start := time.Now()
	for w, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(w) * interval / time.Duration(writers))
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
				res.n++
				res.lastCommit = time.Now()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return paced{}, err
	}
	res.elapsed = time.Since(start)
	return res, nil
}
