package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/subject"
)

// workload describes concurrent writers inserting outbox events.
//
// Each aggregate belongs to one writer and carries a counter n = 1, 2, 3...
// in commit order, so the stream must show every aggregate's n without a
// gap, a repeat or a swap.
type workload struct {
	Writers    int
	Aggregates int
	FirstAgg   int           // aggregates are FirstAgg .. FirstAgg+Aggregates-1
	Events     int           // committed events in all
	MaxTx      int           // transaction sizes are 1..MaxTx
	Rollback   float64       // share of transactions rolled back
	Hot        float64       // share of events on each writer's hot aggregate
	Pace       time.Duration // pause between a writer's transactions
	Tolerant   bool          // survive Postgres restarts (resolving in-doubt commits)
	Via        via           // how events are written; default the outbox table
}

// via is a way of writing outbox events.
type via int

const (
	viaTable     via = iota // rows of public.outbox
	viaMessages             // pg_logical_emit_message(true, 'outbox', json)
	viaTwoTables            // rows of public.outbox and public.outbox2, mixed within transactions
)

// twoTablesConfig is the relay config for viaTwoTables: outbox2's events go
// to their own subject prefix.
const twoTablesConfig = `outbox:
  tables:
    - table: public.outbox
    - table: public.outbox2
      subject: "billing.{aggregate_type}.{aggregate_id}"
`

// messagesConfig is the relay config for viaMessages: no table.
const messagesConfig = `outbox:
  messages:
    prefix: outbox
`

type sent struct {
	ID, AggType, AggID, Type, Payload string
	N                                 int
	Prefix                            string // of the subject; "" means "outbox"
}

type written struct {
	mu         sync.Mutex
	committed  map[string]sent
	rolledBack map[string]bool
	count      int
}

func (w *written) Committed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.committed)
}

// aggregate returns the aggregate type and id of aggregate i. Some ids hold
// bytes a subject token cannot: they must be escaped in the subject and
// unchanged in the header.
func aggregate(i int) (string, string) {
	typ := "order"
	if i%3 == 0 {
		typ = "customer.account"
	}
	switch i % 7 {
	case 0:
		return typ, fmt.Sprintf("agg.%d x", i)
	case 1:
		return typ, fmt.Sprintf("agg*%d>", i)
	case 2:
		return typ, fmt.Sprintf("ägg-%d%%", i)
	}
	return typ, fmt.Sprintf("agg-%d", i)
}

// run writes the whole workload and returns what was written.
func (wl workload) run(ctx context.Context, t *testing.T, pg *testenv.Postgres) *written {
	t.Helper()
	w, err := wl.start(ctx, pg).wait()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// load is a workload running in the background.
type load struct {
	w    *written
	done chan struct{}
	err  error
}

// start runs the workload in the background; wait returns its result.
func (wl workload) start(ctx context.Context, pg *testenv.Postgres) *load {
	l := &load{w: &written{committed: map[string]sent{}, rolledBack: map[string]bool{}}, done: make(chan struct{})}
	var wg sync.WaitGroup
	errs := make(chan error, wl.Writers)
	for wr := range wl.Writers {
		share := wl.Events / wl.Writers
		if wr == 0 {
			share += wl.Events % wl.Writers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := wl.writer(ctx, pg, wr, share, l.w); err != nil {
				errs <- fmt.Errorf("writer %d: %w", wr, err)
			}
		}()
	}
	go func() {
		wg.Wait()
		close(errs)
		l.err = <-errs
		close(l.done)
	}()
	return l
}

func (l *load) wait() (*written, error) {
	<-l.done
	return l.w, l.err
}

func (l *load) finished() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (wl workload) writer(ctx context.Context, pg *testenv.Postgres, wr, share int, w *written) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	r := rand.New(rand.NewPCG(uint64(wr), uint64(wl.FirstAgg)))
	var mine []int
	for a := wr; a < wl.Aggregates; a += wl.Writers {
		mine = append(mine, wl.FirstAgg+a)
	}
	next := map[int]int{}
	pad := strings.Repeat("x", 200)
	for done := 0; done < share; {
		if conn == nil || conn.IsClosed() {
			c, err := connect(ctx, pg, wl.Tolerant)
			if err != nil {
				return err
			}
			conn = c
		}
		size := min(1+r.IntN(wl.MaxTx), share-done)
		rollback := r.Float64() < wl.Rollback
		tentative := map[int]int{}
		var evs []sent
		for range size {
			a := mine[r.IntN(len(mine))]
			if r.Float64() < wl.Hot {
				a = mine[0] // each writer's first aggregate is hot
			}
			tentative[a]++
			n := next[a] + tentative[a]
			typ, id := aggregate(a)
			ev := sent{AggType: typ, AggID: id, Type: "created", N: n}
			if n > 1 {
				ev.Type = "updated"
			}
			ev.Payload = fmt.Sprintf(`{"agg": %q, "n": %d, "writer": %d, "pad": %q}`, id, n, wr, pad)
			if wl.Via == viaTwoTables && r.IntN(2) == 1 {
				ev.Prefix = "billing"
			}
			evs = append(evs, ev)
		}
		committed, err := insertTx(ctx, conn, evs, rollback, wl.Via)
		if err != nil {
			if !wl.Tolerant || ctx.Err() != nil {
				return err
			}
			// The connection broke (Postgres restarted). If COMMIT was sent
			// its outcome is unknown: ask Postgres whether the rows exist.
			conn.Close(context.Background())
			conn = nil
			if committed, err = resolve(ctx, pg, evs); err != nil {
				return err
			}
		}
		w.mu.Lock()
		for _, ev := range evs {
			if ev.ID == "" {
				continue // its INSERT never ran
			}
			if committed {
				w.committed[ev.ID] = ev
			} else {
				w.rolledBack[ev.ID] = true
			}
		}
		w.mu.Unlock()
		if committed {
			for a, k := range tentative {
				next[a] += k
			}
			done += size
		}
		if wl.Pace > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wl.Pace):
			}
		}
	}
	return nil
}

// insertTx inserts evs in one transaction, filling in their ids and the
// payload text as Postgres stores it, and commits (or rolls back). It
// reports whether the transaction committed; with an error, evs whose ID is
// set were inserted and the caller must find out whether COMMIT happened.
func insertTx(ctx context.Context, conn *pgx.Conn, evs []sent, rollback bool, how via) (bool, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	for i := range evs {
		ev := &evs[i]
		var id, payload string
		var err error
		switch {
		case how == viaMessages:
			// The service builds the JSON; the payload is published as its
			// JSON text, exactly as written.
			err = tx.QueryRow(ctx, `SELECT m.id, m.payload FROM (SELECT gen_random_uuid()::text AS id, $4::text AS payload) m,
				LATERAL pg_logical_emit_message(true, 'outbox', json_build_object('id', m.id, 'aggregate_type', $1::text,
					'aggregate_id', $2::text, 'type', $3::text, 'payload', m.payload::json)::text)`,
				ev.AggType, ev.AggID, ev.Type, ev.Payload).Scan(&id, &payload)
		case ev.Prefix == "billing":
			err = tx.QueryRow(ctx, "INSERT INTO outbox2 (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text, payload::text",
				ev.AggType, ev.AggID, ev.Type, ev.Payload).Scan(&id, &payload)
		default:
			err = tx.QueryRow(ctx, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text, payload::text",
				ev.AggType, ev.AggID, ev.Type, ev.Payload).Scan(&id, &payload)
		}
		if err != nil {
			tx.Rollback(ctx)
			return false, err
		}
		ev.ID, ev.Payload = id, payload
	}
	if rollback {
		return false, tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

func connect(ctx context.Context, pg *testenv.Postgres, retry bool) (*pgx.Conn, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := pg.Connect(ctx)
		if err == nil || !retry || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond): // Postgres is restarting
		}
	}
}

// resolve finds out whether the transaction that inserted evs committed.
func resolve(ctx context.Context, pg *testenv.Postgres, evs []sent) (bool, error) {
	var ids []string
	for _, ev := range evs {
		if ev.ID != "" {
			ids = append(ids, ev.ID)
		}
	}
	if len(ids) < len(evs) {
		return false, nil // an INSERT failed: COMMIT was never sent
	}
	conn, err := connect(ctx, pg, true)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE id = ANY($1::uuid[])", ids).Scan(&n); err != nil {
		return false, err
	}
	switch n {
	case len(ids):
		return true, nil
	case 0:
		return false, nil
	}
	return false, fmt.Errorf("%d of %d rows of one transaction exist", n, len(ids))
}

// received is one message read back from the stream.
type received struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// readStream reads every message of the stream, in stream order.
func readStream(t *testing.T, js jetstream.JetStream) []received {
	t.Helper()
	return readStreamNamed(t, js, stream)
}

// readStreamNamed reads every message of stream name, in stream order.
func readStreamNamed(t *testing.T, js jetstream.JetStream, name string) []received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for len(out) < want {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, received{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d messages: %v", len(out), want, ctx.Err())
		}
	}
	return out
}

// verify checks the stream against what was written: every committed event
// exactly once, nothing rolled back, per-aggregate and overall commit order,
// and subjects, headers and payloads as the contract says.
func verify(t *testing.T, msgs []received, w *written) {
	t.Helper()
	seen := map[string]bool{}
	lastN := map[string]int{}
	var last sink.Position
	lost, dup, reordered := 0, 0, 0
	for i, m := range msgs {
		id := m.Header.Get("Nats-Msg-Id")
		if w.rolledBack[id] {
			t.Fatalf("message %d: event %s of a rolled-back transaction arrived", m.Seq, id)
		}
		ev, ok := w.committed[id]
		if !ok {
			t.Fatalf("message %d: unknown event id %q", m.Seq, id)
		}
		if seen[id] {
			dup++
			continue
		}
		seen[id] = true
		prefix := ev.Prefix
		if prefix == "" {
			prefix = "outbox"
		}
		if want := prefix + "." + subject.Escape(ev.AggType) + "." + subject.Escape(ev.AggID); m.Subject != want {
			t.Fatalf("message %d: subject %q, want %q", m.Seq, m.Subject, want)
		}
		for k, want := range map[string]string{
			"Outbox-Event-Id":       ev.ID,
			"Outbox-Event-Type":     ev.Type,
			"Outbox-Aggregate-Type": ev.AggType,
			"Outbox-Aggregate-Id":   ev.AggID,
		} {
			if got := m.Header.Get(k); got != want {
				t.Fatalf("message %d: header %s = %q, want %q", m.Seq, k, got, want)
			}
		}
		if string(m.Data) != ev.Payload {
			t.Fatalf("message %d: payload %q, want %q", m.Seq, m.Data, ev.Payload)
		}
		if _, err := time.Parse(time.RFC3339Nano, m.Header.Get("Outbox-Commit-Time")); err != nil {
			t.Fatalf("message %d: Outbox-Commit-Time: %v", m.Seq, err)
		}
		lsn, err := pglogrepl.ParseLSN(m.Header.Get("Outbox-Commit-LSN"))
		if err != nil {
			t.Fatalf("message %d: Outbox-Commit-LSN: %v", m.Seq, err)
		}
		seq, err := strconv.ParseUint(m.Header.Get("Outbox-Tx-Seq"), 10, 32)
		if err != nil || seq == 0 {
			t.Fatalf("message %d: Outbox-Tx-Seq %q", m.Seq, m.Header.Get("Outbox-Tx-Seq"))
		}
		pos := sink.Position{CommitLSN: lsn, TxSeq: uint32(seq)}
		if i > 0 && !last.Less(pos) {
			reordered++
			t.Errorf("message %d at %s is not after message %d at %s", m.Seq, pos, msgs[i-1].Seq, last)
		}
		last = pos
		key := ev.AggType + "/" + ev.AggID
		if ev.N != lastN[key]+1 {
			reordered++
			t.Errorf("aggregate %s: event n=%d follows n=%d", key, ev.N, lastN[key])
		}
		lastN[key] = ev.N
	}
	for id := range w.committed {
		if !seen[id] {
			lost++
		}
	}
	t.Logf("stream: %d messages, %d committed events, %d rolled back; lost %d, duplicated %d, out of order %d",
		len(msgs), len(w.committed), len(w.rolledBack), lost, dup, reordered)
	if lost+dup+reordered > 0 {
		t.Fatalf("lost %d, duplicated %d, out of order %d", lost, dup, reordered)
	}
}
