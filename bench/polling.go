package main

// The polling-publisher baseline: what teams write by hand instead of a CDC
// relay, run on the relay's workloads (the same backlogs, the same paced
// writers, the same stream, subjects and headers) so the two sets of
// figures can be read side by side.

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
	"golang.org/x/sync/errgroup"
)

// The baseline's settings, checked as the flags are parsed so that a bad
// value stops the bench before the relay's runs.
var (
	pollBatch    = 1000
	pollInterval = 100 * time.Millisecond
	pollWorkers  = 4
)

func init() {
	flag.Func("poll-batch", "polling baseline: rows per poll, the SELECT's LIMIT (default 1000)", positive(&pollBatch, strconv.Atoi))
	flag.Func("poll-interval", "polling baseline: sleep after a poll that finds no rows (default 100ms)", positive(&pollInterval, time.ParseDuration))
	flag.Func("poll-workers", "polling baseline: workers for one extra multi-worker drain row; 1: no such row (default 4)", positive(&pollWorkers, strconv.Atoi))
}

func positive[T int | time.Duration](dst *T, parse func(string) (T, error)) func(string) error {
	return func(s string) error {
		v, err := parse(s)
		if err == nil && v <= 0 {
			err = errors.New("must be above 0")
		}
		if err == nil {
			*dst = v
		}
		return err
	}
}

// pollingBaseline runs the polling publisher on the relay's drain and
// latency workloads and prints its two tables.
func pollingBaseline(sizes, txSizes, rates string, latDur time.Duration) error {
	ns, err := parseInts(sizes)
	if err != nil {
		return err
	}
	txs, err := parseInts(txSizes)
	if err != nil {
		return err
	}
	fmt.Printf("\nPolling baseline: the publisher teams write by hand. Each worker loops: BEGIN; SELECT ... ORDER BY seq\n")
	fmt.Printf("LIMIT %d FOR UPDATE SKIP LOCKED; async publish, wait for every PubAck; DELETE ... WHERE id = ANY($1); COMMIT;\n", pollBatch)
	fmt.Printf("it sleeps %s after a poll that finds nothing. Same backlogs, writers, stream, subjects and headers as\n", pollInterval)
	fmt.Println("the relay, less the three that need a log position (Outbox-Commit-LSN, Outbox-Tx-Seq, Nats-Expected-Last-")
	fmt.Println("Sequence); the outbox gains an indexed identity column seq. Checked: the stream holds each event once, the")
	fmt.Println("outbox ends empty. Drain: start (connecting included) to the last PubAck. agg order: insert = each")
	fmt.Println("aggregate's events are stored in insert (seq) order, its commit order only if producers serialise writes")
	fmt.Println("per aggregate (the relay keeps commit order regardless); none = several workers' batches race.")
	fmt.Println()
	fmt.Printf("%-12s %9s %8s %14s %10s\n", "events/tx", "events", "workers", "polling ev/s", "agg order")
	row := func(n, tx, workers int) error {
		secs, err := pollingDrain(n, tx, workers)
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
	if pollWorkers > 1 && len(ns) > 0 && len(txs) > 0 {
		if err := row(ns[0], txs[0], pollWorkers); err != nil {
			return err
		}
	}

	if rates == "" {
		return nil
	}
	rs, err := parseInts(rates)
	if err != nil {
		return err
	}
	fmt.Printf("\nPolling baseline live latency, commit -> stored (created_at in Outbox-Commit-Time vs JetStream timestamp),\n")
	fmt.Printf("1 worker, poll interval %s, single-event transactions, %s per rate. created_at is now(), the start of\n", pollInterval, latDur)
	fmt.Println("the single-INSERT transaction: it also counts the INSERT itself, tens of microseconds here.")
	fmt.Println()
	fmt.Printf("%-10s %12s %10s %10s %10s %14s\n", "target/s", "achieved/s", "p50", "p99", "p99.9", "caught up in")
	lat, err := pollingLatency(rs, latDur)
	if err != nil {
		return fmt.Errorf("polling baseline latency: %w", err)
	}
	for _, l := range lat {
		fmt.Printf("%-10d %12.0f %10s %10s %10s %14s\n", l.rate, l.achieved, l.p50.Round(10*time.Microsecond), l.p99.Round(10*time.Microsecond), l.p999.Round(10*time.Microsecond), l.lagAfter.Round(time.Millisecond))
	}
	return nil
}

// errStoppedEarly is a poller's Run returning before it was told to stop.
var errStoppedEarly = errors.New("Run returned before it was stopped")

// poller is a polling publisher written the way a competent team would:
// several workers may run, since SKIP LOCKED keeps them off each other's
// rows; each publishes its batch asynchronously and deletes the rows only
// after every PubAck, in the transaction that holds their locks, so an event
// is removed only once stored (a crash republishes, and Nats-Msg-Id lets
// JetStream drop the repeat within its duplicate window).
type poller struct {
	connect  func(context.Context) (*pgx.Conn, error)
	js       jetstream.JetStream
	subject  *sink.Subject
	batch    int
	interval time.Duration
	workers  int

	stored  atomic.Int64 // PubAcks of newly stored messages
	dups    atomic.Int64 // PubAcks JetStream flagged as duplicates
	lastAck atomic.Int64 // UnixNano at which the latest batch's last PubAck arrived
}

func newPoller(e *benchEnv, workers int) (*poller, error) {
	subj, err := sink.ParseSubject("outbox.{aggregate_type}.{aggregate_id}")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(e.nc,
		jetstream.WithPublishAsyncMaxPending(max(4000, workers*pollBatch)),
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	return &poller{connect: e.pg.Connect, js: js, subject: subj, batch: pollBatch, interval: pollInterval, workers: workers}, nil
}

// Run polls until ctx is cancelled, which is a clean stop.
func (p *poller) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for range p.workers {
		g.Go(func() error { return p.work(ctx) })
	}
	return g.Wait()
}

func (p *poller) work(ctx context.Context) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// The LIMIT is a literal: with a parameter, the cached statement could
	// switch to a generic plan that sorts the whole table.
	query := fmt.Sprintf(`SELECT id, aggregatetype, aggregateid, type, payload, created_at
		FROM outbox ORDER BY seq LIMIT %d FOR UPDATE SKIP LOCKED`, p.batch)
	for {
		n, err := p.poll(ctx, conn, query)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.interval):
		}
	}
}

// poll moves one batch from the outbox to the stream and returns its size.
func (p *poller) poll(ctx context.Context, conn *pgx.Conn, query string) (int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background()) // a no-op once committed

	var (
		id      pgtype.UUID
		ev      decode.Event
		created time.Time
		ids     = make([]pgtype.UUID, 0, p.batch)
		acks    = make([]jetstream.PubAckFuture, 0, p.batch)
	)
	rows, _ := tx.Query(ctx, query)
	// Publishing as rows arrive overlaps reading with publishing.
	_, err = pgx.ForEachRow(rows, []any{&id, &ev.AggregateType, &ev.AggregateID, &ev.Type, &ev.Payload, &created}, func() error {
		ev.ID = id.String()
		m := &nats.Msg{
			Subject: string(p.subject.Render(nil, &ev)),
			Data:    ev.Payload,
			Header: nats.Header{
				sink.HeaderMsgID:         {ev.ID},
				sink.HeaderEventID:       {ev.ID},
				sink.HeaderEventType:     {ev.Type},
				sink.HeaderAggregateType: {ev.AggregateType},
				sink.HeaderAggregateID:   {ev.AggregateID},
				sink.HeaderCommitTime:    {created.UTC().Format(time.RFC3339Nano)},
			},
		}
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish event %s: %w", ev.ID, err)
		}
		ids, acks = append(ids, id), append(acks, f)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("select a batch: %w", err)
	}
	if len(ids) == 0 {
		return 0, tx.Commit(ctx)
	}
	for _, f := range acks {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				p.dups.Add(1)
			} else {
				p.stored.Add(1)
			}
		case err := <-f.Err():
			return 0, fmt.Errorf("publish event %s: %w", f.Msg().Header.Get(sink.HeaderMsgID), err)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	for now := time.Now().UnixNano(); ; {
		last := p.lastAck.Load()
		if last >= now || p.lastAck.CompareAndSwap(last, now) {
			break
		}
	}
	tag, err := tx.Exec(ctx, "DELETE FROM outbox WHERE id = ANY($1)", ids)
	if err != nil {
		return 0, fmt.Errorf("delete a published batch: %w", err)
	}
	if tag.RowsAffected() != int64(len(ids)) {
		return 0, fmt.Errorf("deleted %d of the %d rows this transaction holds locked", tag.RowsAffected(), len(ids))
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit a published batch: %w", err)
	}
	return len(ids), nil
}

// pollingRun is a poller working in its own throwaway environment: the
// relay's bench environment plus an indexed insertion-order column, and the
// stream the relay would create (same name, subjects and settings).
type pollingRun struct {
	*poller
	e      *benchEnv
	stop   context.CancelFunc
	errc   chan error // Run's result
	done   bool       // Run's result was received, into runErr
	runErr error
}

// startPolling sets up the environment, calls fill, then starts the
// poller; close releases everything.
func startPolling(ctx context.Context, workers int, fill func(*benchEnv) error) (_ *pollingRun, err error) {
	r := &pollingRun{errc: make(chan error, 1), stop: func() {}}
	if r.e, err = newBenchEnv(); err != nil {
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
		if err := r.e.pg.Exec(ctx, sql); err != nil {
			return nil, err
		}
	}
	if _, err := sink.EnsureStream(ctx, r.e.js, "OUTBOX", "outbox"); err != nil {
		return nil, err
	}
	if err := fill(r.e); err != nil {
		return nil, err
	}
	if r.poller, err = newPoller(r.e, workers); err != nil {
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
	r.e.close()
}

// finish waits until the poller has published want events and committed
// their deletion (stopping it mid-batch would roll a DELETE back), stops
// it, and checks the stream.
func (r *pollingRun) finish(ctx context.Context, want uint64) error {
	conn, err := r.e.pg.Connect(ctx)
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
	return r.check(ctx, r.e.js, want)
}

// pollingDrain commits a backlog of n events in transactions of txSize, the
// way the relay's drain does, then runs the poller until it is gone. It
// returns the seconds from the poller's start to its last PubAck.
func pollingDrain(n, txSize, workers int) (float64, error) {
	ctx := context.Background()
	var start time.Time
	r, err := startPolling(ctx, workers, func(e *benchEnv) error {
		err := writeBacklog(ctx, e.pg, n, txSize)
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

// pollingLatency runs one poller against the relay's paced single-event
// transactions at each rate and measures commit→stored the way
// liveLatency does, through the Outbox-Commit-Time header.
func pollingLatency(rates []int, dur time.Duration) ([]latencyResult, error) {
	ctx := context.Background()
	r, err := startPolling(ctx, 1, func(*benchEnv) error { return nil })
	if err != nil {
		return nil, err
	}
	defer r.close()
	var out []latencyResult
	var total uint64
	for _, rate := range rates {
		n, elapsed, lastCommit, err := pacedInserts(ctx, r.e.pg, rate, dur)
		if err != nil {
			return nil, err
		}
		total += uint64(n)
		err = r.wait(time.Minute, func() (bool, error) {
			st, err := r.e.js.Stream(ctx, "OUTBOX")
			if err != nil {
				return false, err
			}
			return st.CachedInfo().State.Msgs >= total, nil
		})
		if err != nil {
			return nil, fmt.Errorf("at %d/s the stream did not catch up: %w", rate, err)
		}
		res := latencyResult{rate: rate, achieved: float64(n) / elapsed.Seconds(), lagAfter: time.Since(lastCommit)}
		lats, err := latencies(ctx, r.e.js, total-uint64(n)+1, total)
		if err != nil {
			return nil, err
		}
		res.p50, res.p99, res.p999 = quantile(lats, 0.5), quantile(lats, 0.99), quantile(lats, 0.999)
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

// check verifies a finished run: every event was stored once (no PubAck
// was a duplicate) and the stream holds exactly want messages, each with a
// distinct Nats-Msg-Id.
func (p *poller) check(ctx context.Context, js jetstream.JetStream, want uint64) error {
	if d := p.dups.Load(); d > 0 {
		return fmt.Errorf("JetStream dropped %d publishes as duplicates", d)
	}
	if got := uint64(p.stored.Load()); got != want {
		return fmt.Errorf("%d events stored, want %d", got, want)
	}
	st, err := js.Stream(ctx, "OUTBOX")
	if err != nil {
		return err
	}
	if got := st.CachedInfo().State.Msgs; got != want {
		return fmt.Errorf("stream holds %d messages, want %d", got, want)
	}
	cons, err := js.OrderedConsumer(ctx, "OUTBOX", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	seen := make(map[[16]byte]struct{}, want)
	for uint64(len(seen)) < want {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var id pgtype.UUID
			if err := id.Scan(m.Headers().Get(sink.HeaderMsgID)); err != nil {
				return fmt.Errorf("message %d: Nats-Msg-Id: %w", len(seen)+got, err)
			}
			if _, dup := seen[id.Bytes]; dup {
				return fmt.Errorf("the stream holds event %s twice", id)
			}
			seen[id.Bytes] = struct{}{}
		}
		if got == 0 {
			return fmt.Errorf("read %d of %d messages back", len(seen), want)
		}
	}
	return nil
}

func parseInts(list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		v, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%q in %q is not a number", s, list)
		}
		out = append(out, v)
	}
	return out, nil
}
