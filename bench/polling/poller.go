package polling

// The polling publisher itself: SELECT ... FOR UPDATE SKIP LOCKED, publish,
// DELETE. baseline.go runs it on the relay's workloads.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/sink"
	"golang.org/x/sync/errgroup"
)

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

func newPoller(e *Env, cfg Config, workers int) (*poller, error) {
	subj, err := sink.ParseSubject("outbox.{aggregate_type}.{aggregate_id}")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(e.NC,
		jetstream.WithPublishAsyncMaxPending(max(4000, workers*cfg.Batch)),
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	return &poller{connect: e.PG.Connect, js: js, subject: subj, batch: cfg.Batch, interval: cfg.Interval, workers: workers}, nil
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
