package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/pgoutputtest"
	"github.com/outboxrelay/outboxrelay/pipeline"
	"github.com/outboxrelay/outboxrelay/sink"
)

// fakeTracker records what the pipeline announces. Like the checkpoint, it
// answers Begin with false for a transaction already committed (a replay
// after a reconnect).
type fakeTracker struct {
	mu        sync.Mutex
	calls     []string
	committed pglogrepl.LSN
}

func (t *fakeTracker) record(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, fmt.Sprintf(format, args...))
}

func (t *fakeTracker) Begin(commit pglogrepl.LSN) (bool, error) {
	t.mu.Lock()
	replay := commit <= t.committed
	t.mu.Unlock()
	if replay {
		t.record("skip %s", commit)
		return false, nil
	}
	t.record("begin %s", commit)
	return true, nil
}

func (t *fakeTracker) Add(commit pglogrepl.LSN) { t.record("add %s", commit) }

func (t *fakeTracker) Commit(commit, end pglogrepl.LSN) error {
	t.record("commit %s %s", commit, end)
	t.mu.Lock()
	t.committed = commit
	t.mu.Unlock()
	return nil
}

func (t *fakeTracker) Mark(lsn pglogrepl.LSN) { t.record("mark %s", lsn) }

func (t *fakeTracker) log() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.calls)
}

// fakePublisher records the events it is handed. Publish blocks until ctx
// ends when block is set, like a sink whose window is full.
type fakePublisher struct {
	mu     sync.Mutex
	events []decode.Event
	block  bool
	halt   error
}

func (p *fakePublisher) Publish(ctx context.Context, ev *decode.Event) error {
	if p.block {
		<-ctx.Done()
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := *ev
	e.Payload = bytes.Clone(ev.Payload)
	p.events = append(p.events, e)
	return nil
}

func (p *fakePublisher) Halted() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.halt
}

func (p *fakePublisher) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for _, e := range p.events {
		ids = append(ids, e.ID)
	}
	return ids
}

const relid = 16384

var (
	t0      = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	outbox  = decode.Table{Schema: "public", Name: "outbox", Columns: decode.Columns{ID: "id", AggregateType: "aggregatetype", AggregateID: "aggregateid", Type: "type", Payload: "payload"}}
	columns = []pgoutputtest.Col{{Name: "id", OID: pgoutputtest.OIDText}, {Name: "aggregatetype", OID: pgoutputtest.OIDText},
		{Name: "aggregateid", OID: pgoutputtest.OIDText}, {Name: "type", OID: pgoutputtest.OIDText}, {Name: "payload", OID: pgoutputtest.OIDJSONB}}
)

// stream builds the capture's messages.
type stream []capture.Message

func (s stream) data(b []byte) stream {
	return append(s, capture.Message{Kind: capture.Data, Data: b})
}

func (s stream) relation() stream {
	return s.data(pgoutputtest.Relation(relid, "public", "outbox", columns...))
}

// tx is a transaction committing at lsn with one outbox row per id; an id
// ending in "!" has an empty aggregate id, which makes the event invalid.
func (s stream) tx(lsn uint64, ids ...string) stream {
	s = s.data(pgoutputtest.Begin(lsn, t0, uint32(lsn)))
	for _, id := range ids {
		agg := "a-1"
		if strings.HasSuffix(id, "!") {
			agg = ""
		}
		s = s.data(pgoutputtest.Insert(relid, pgoutputtest.Text(id), pgoutputtest.Text("order"), pgoutputtest.Text(agg),
			pgoutputtest.Text("Placed"), pgoutputtest.Text(`{}`)))
	}
	return s.data(pgoutputtest.Commit(lsn, lsn+8, t0))
}

func (s stream) restart() stream { return append(s, capture.Message{Kind: capture.Restart}) }

// feed runs a pipeline over msgs until they are consumed, then cancels it
// and waits for Run to return.
func feed(t *testing.T, p *pipeline.Pipeline, msgs stream) {
	t.Helper()
	ch := make(chan capture.Message)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ch) }()
	timeout := time.After(10 * time.Second)
	for i, m := range msgs {
		select {
		case ch <- m:
		case err := <-done:
			t.Fatalf("Run returned %v before taking every message", err)
		case <-timeout:
			cancel()
			t.Fatalf("Run took no message %d for 10s (halted: %v)", i, p.Halted())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
}

// After a reconnect Postgres replays from the confirmed position: the
// transactions already handed over are skipped, the rest published.
func TestReplaySkippedAfterRestart(t *testing.T) {
	tr, pub := &fakeTracker{}, &fakePublisher{}
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}}, pub, tr)
	feed(t, p, stream{}.relation().tx(0x100, "a1", "a2").
		restart().relation().tx(0x100, "a1", "a2").tx(0x200, "b1"))

	if got, want := pub.ids(), []string{"a1", "a2", "b1"}; !slices.Equal(got, want) {
		t.Errorf("published %v, want %v (the replayed transaction skipped)", got, want)
	}
	want := []string{"begin 0/100", "add 0/100", "add 0/100", "commit 0/100 0/108",
		"skip 0/100", "begin 0/200", "add 0/200", "commit 0/200 0/208"}
	if got := tr.log(); !slices.Equal(got, want) {
		t.Errorf("tracker saw\n%v\nwant\n%v", got, want)
	}
	if h := p.Halted(); h != nil {
		t.Errorf("halted: %v", h)
	}
}

// A non-transactional message is a transaction of its own: begun, added
// and committed around its one event; replayed after a reconnect, it is
// skipped like any transaction. It is invalid (it is sent even if its
// transaction rolls back), so only dead-letter mode publishes it.
func TestStandaloneMessage(t *testing.T) {
	tr, pub := &fakeTracker{}, &fakePublisher{}
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}, Messages: "outbox", DeadLetter: true}, pub, tr)
	msg := pgoutputtest.Message(false, 0x300, "outbox",
		[]byte(`{"id":"m1","aggregate_type":"order","aggregate_id":"a-1","type":"Placed","payload":{}}`))
	feed(t, p, stream{}.data(msg).restart().data(msg).data(pgoutputtest.Message(false, 0x400, "other", []byte("x"))))

	if got, want := pub.ids(), []string{"m1"}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if inv := pub.events[0].Invalid; !strings.Contains(inv, "transactional=false") {
		t.Errorf("the standalone message's Invalid = %q, want the transactional=false reason", inv)
	}
	want := []string{"begin 0/300", "add 0/300", "commit 0/300 0/301", "skip 0/300"}
	if got := tr.log(); !slices.Equal(got, want) {
		t.Errorf("tracker saw\n%v\nwant\n%v", got, want)
	}
}

// An invalid event halts the pipeline at that event: the events before it
// are published, it and everything after are not, and the halt names it
// with the one fix text.
func TestHaltAtInvalidEvent(t *testing.T) {
	tr, pub := &fakeTracker{}, &fakePublisher{}
	var logs bytes.Buffer
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, pub, tr)

	ch := make(chan capture.Message, 64)
	for _, m := range (stream{}).relation().tx(0x100, "e1", "e2!", "e3").tx(0x200, "f1") {
		ch <- m
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ch) }()
	deadline := time.Now().Add(10 * time.Second)
	for p.Halted() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no halt within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while halted; it must hold the slot until stopped", err)
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}

	if got, want := pub.ids(), []string{"e1"}; !slices.Equal(got, want) {
		t.Errorf("published %v, want %v: nothing at or after the invalid event", got, want)
	}
	if got, want := tr.log(), []string{"begin 0/100", "add 0/100"}; !slices.Equal(got, want) {
		t.Errorf("tracker saw %v, want %v: the invalid event is never added, its transaction never committed", got, want)
	}
	h := p.Halted()
	var inv *sink.InvalidEventError
	if !errors.As(h, &inv) || h.Event() != inv {
		t.Fatalf("halt %v does not wrap the *sink.InvalidEventError", h)
	}
	if inv.Event.ID != "e2!" || inv.Event.CommitLSN != 0x100 || inv.Event.TxSeq != 2 {
		t.Errorf("halted at %s (%s, seq %d), want e2! (0/100, seq 2)", inv.Event.ID, inv.Event.CommitLSN, inv.Event.TxSeq)
	}
	if inv.Fix != sink.InvalidEventFix {
		t.Errorf("fix %q, want sink.InvalidEventFix", inv.Fix)
	}
	if !strings.HasPrefix(h.Error(), "halted: ") || !strings.Contains(h.Error(), "is empty") {
		t.Errorf("halt says %q", h.Error())
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "event_id=e2!") {
		t.Errorf("want one ERROR line naming event e2!, got:\n%s", logs.String())
	}
}

// In dead-letter mode an invalid event is handed to the publisher (which
// sends it to the dead-letter subject) in its place, and nothing halts.
func TestDeadLetterMode(t *testing.T) {
	tr, pub := &fakeTracker{}, &fakePublisher{}
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}, DeadLetter: true}, pub, tr)
	feed(t, p, stream{}.relation().tx(0x100, "e1", "e2!", "e3"))

	if got, want := pub.ids(), []string{"e1", "e2!", "e3"}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if pub.events[1].Invalid == "" || pub.events[0].Invalid != "" {
		t.Errorf("Invalid: %q, %q; want only the second event marked", pub.events[0].Invalid, pub.events[1].Invalid)
	}
	if h := p.Halted(); h != nil {
		t.Errorf("halted in dead-letter mode: %v", h)
	}
	if got := tr.log(); len(got) != 5 || got[4] != "commit 0/100 0/108" {
		t.Errorf("tracker saw %v, want begin, three adds, commit", got)
	}
}

// An update of an outbox row is ignored, with one warning per table, not
// one per row.
func TestUpdateWarnsOnce(t *testing.T) {
	tr, pub := &fakeTracker{}, &fakePublisher{}
	var logs bytes.Buffer
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, pub, tr)
	row := []pgoutputtest.Val{pgoutputtest.Text("u1"), pgoutputtest.Text("order"), pgoutputtest.Text("a-1"), pgoutputtest.Text("Placed"), pgoutputtest.Text(`{}`)}
	s := stream{}.relation().data(pgoutputtest.Begin(0x100, t0, 1))
	for range 3 {
		s = s.data(pgoutputtest.Update(relid, 0, nil, row))
	}
	feed(t, p, s.data(pgoutputtest.Delete(relid, 'K', row[0])).data(pgoutputtest.Commit(0x100, 0x108, t0)))

	if got := pub.ids(); len(got) != 0 {
		t.Errorf("published %v for updates and a delete, want nothing", got)
	}
	if n := strings.Count(logs.String(), "an outbox row was updated"); n != 1 {
		t.Errorf("%d update warnings, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("an update halted or errored:\n%s", logs.String())
	}
}

// A stop in the middle of a transaction, even while Publish waits for
// room, returns nil without committing the transaction and is no halt:
// the slot is confirmed only up to the last committed transaction, and
// the rest is replayed on the next start.
func TestStopMidTransaction(t *testing.T) {
	for _, block := range []bool{false, true} {
		t.Run(fmt.Sprintf("publish_blocked=%v", block), func(t *testing.T) {
			tr, pub := &fakeTracker{}, &fakePublisher{block: block}
			p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}}, pub, tr)
			ch := make(chan capture.Message)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx, ch) }()
			for _, m := range (stream{}).relation().data(pgoutputtest.Begin(0x100, t0, 1)) {
				ch <- m
			}
			ch <- stream{}.tx(0x100, "e1")[1] // the insert; its commit never comes
			if !block {
				ch <- capture.Message{Kind: capture.Keepalive, WALEnd: 0x50}
			}
			cancel()
			returned(t, done, 10*time.Second, "the stop")
			if h := p.Halted(); h != nil {
				t.Errorf("a stop is not a halt, got %v", h)
			}
			for _, c := range tr.log() {
				if strings.HasPrefix(c, "commit") {
					t.Errorf("tracker saw %q: an interrupted transaction must not commit", c)
				}
			}
		})
	}
}

// The publisher's own halt (a stream that lost acknowledged events) is the
// relay's halt, with its cause kept for errors.Is.
func TestPublisherHalt(t *testing.T) {
	cause := errors.New(`stream "OUTBOX" lost events it had acknowledged`)
	pub := &fakePublisher{}
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}}, pub, &fakeTracker{})
	if h := p.Halted(); h != nil {
		t.Fatalf("halted before anything happened: %v", h)
	}
	pub.mu.Lock()
	pub.halt = cause
	pub.mu.Unlock()
	h := p.Halted()
	if h == nil || !errors.Is(h, cause) || h.Event() != nil {
		t.Fatalf("Halted() = %v, want a halt wrapping %v with no event", h, cause)
	}
	if got, want := h.Error(), "halted: "+cause.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// A mapped column renamed, then renamed back: in dead-letter mode the rows
// in between are dead-lettered with the reason, the rows after flow on, and
// the misfit is logged once per Relation message; in halt mode the relay
// halts at the first of them with the fix that applies.
func TestRelationMisfit(t *testing.T) {
	renamed := slices.Clone(columns)
	renamed[2].Name = "agg"
	msgs := stream{}.relation().tx(0x100, "e1").
		data(pgoutputtest.Relation(relid, "public", "outbox", renamed...)).tx(0x200, "e2", "e3").
		relation().tx(0x300, "e4")
	const reason = `outbox table public.outbox has no column "aggregateid" (outbox.columns.aggregate_id)`

	t.Run("dead letter", func(t *testing.T) {
		tr, pub := &fakeTracker{}, &fakePublisher{}
		var logs bytes.Buffer
		p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}, DeadLetter: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, pub, tr)
		feed(t, p, msgs)
		if got, want := pub.ids(), []string{"e1", "e2", "e3", "e4"}; !slices.Equal(got, want) {
			t.Fatalf("published %v, want %v", got, want)
		}
		for i, e := range pub.events {
			if bad := i == 1 || i == 2; bad != strings.HasPrefix(e.Invalid, reason) {
				t.Errorf("event %s: Invalid %q", e.ID, e.Invalid)
			}
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "no longer fits") {
			t.Errorf("want one WARN about the misfit, got:\n%s", logs.String())
		}
	})
	t.Run("halt", func(t *testing.T) {
		tr, pub := &fakeTracker{}, &fakePublisher{}
		p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}}, pub, tr)
		ch := make(chan capture.Message, len(msgs))
		for _, m := range msgs {
			ch <- m
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, ch) }()
		deadline := time.Now().Add(10 * time.Second)
		for p.Halted() == nil {
			if time.Now().After(deadline) {
				t.Fatal("no halt within 10s")
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
		inv := p.Halted().Event()
		if inv == nil || inv.Event.ID != "e2" || inv.Event.CommitLSN != 0x200 || inv.Fix != sink.MisfitFix || !strings.HasPrefix(inv.Reason, reason) {
			t.Fatalf("halt %v; want at e2 (0/200) with the missing column and sink.MisfitFix", p.Halted())
		}
		if got, want := pub.ids(), []string{"e1"}; !slices.Equal(got, want) {
			t.Errorf("published %v, want %v", got, want)
		}
	})
}

type slowTracker struct{ nopTracker }

func (slowTracker) Mark(pglogrepl.LSN) { time.Sleep(20 * time.Microsecond) }

// A pipeline whose messages never stop coming still stops when ctx ends:
// it takes a waiting message without a select, so it must look at ctx
// between them as well.
func TestRunStopsWhileMessagesKeepComing(t *testing.T) {
	// The pipeline takes longer per message than the producer, so the
	// channel is never empty.
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}}, &fakePublisher{}, slowTracker{})
	ch := make(chan capture.Message, 4096)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for lsn := pglogrepl.LSN(1); ; lsn++ {
			select {
			case ch <- capture.Message{Kind: capture.Keepalive, WALEnd: lsn}:
			case <-stop:
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ch) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	returned(t, done, 5*time.Second, "its context ending, with messages still coming")
}

// returned waits up to within for Run's result on done, and fails unless
// Run returned nil in that time.
func returned(t *testing.T, done <-chan error, within time.Duration, after string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(within):
		t.Fatalf("Run did not return within %s of %s", within, after)
	}
}
