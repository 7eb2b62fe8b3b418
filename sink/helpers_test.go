package sink_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// acker is a fake sink.Acker that counts acks per commit LSN.
type acker struct {
	mu    sync.Mutex
	byLSN map[pglogrepl.LSN]int
	total int
}

func newAcker() *acker { return &acker{byLSN: map[pglogrepl.LSN]int{}} }

func (a *acker) Ack(lsn pglogrepl.LSN) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byLSN[lsn]++
	a.total++
}

func (a *acker) Total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// check fails t unless a got exactly one ack per event of evs.
func (a *acker) check(t *testing.T, evs []*decode.Event) {
	t.Helper()
	want := map[pglogrepl.LSN]int{}
	for _, ev := range evs {
		want[ev.CommitLSN]++
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total != len(evs) {
		t.Errorf("acker got %d acks, want %d (one per event)", a.total, len(evs))
	}
	if !maps.Equal(a.byLSN, want) {
		bad := 0
		for _, lsn := range slices.Sorted(maps.Keys(want)) {
			if got := a.byLSN[lsn]; got != want[lsn] && bad < 5 {
				t.Errorf("acks for commit LSN %s = %d, want %d", lsn, got, want[lsn])
				bad++
			}
		}
		if len(a.byLSN) != len(want) {
			t.Errorf("acks cover %d commit LSNs, want %d", len(a.byLSN), len(want))
		}
	}
}

// aggregate is an aggregate type and id, and how the default template
// renders them: escaped by hand, not by subject.Escape.
type aggregate struct {
	typ, id string
	subject string
}

var aggregates = []aggregate{
	{"Order", "3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08", "outbox.Order.3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08"},
	{"customer.account", "42", "outbox.customer%2Eaccount.42"},
	{"Order", "a.b c", "outbox.Order.a%2Eb%20c"},
	{"Lager", "Bär*>%", "outbox.Lager.B%C3%A4r%2A%3E%25"},
	{"Order", "tab\there", "outbox.Order.tab%09here"},
}

// firstLSN makes commit LSNs cross the 32-bit boundary, so that the X/X form
// has a non-zero high part for most events.
const firstLSN = pglogrepl.LSN(0xFFFF_F000)

var baseTime = time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC)

// eventLog generates a fixed, deterministic log of events: transactions of
// 1 to 5 events over the aggregates above, each event with an extra header
// and a payload that mixes JSON text and raw bytes.
type eventLog struct {
	i, tx, inTx, size int
}

func newEventLog() *eventLog { return &eventLog{size: 1} }

// next returns the log's next event; the first is number 1 ("ev-00001").
func (l *eventLog) next() *decode.Event {
	if l.inTx == l.size { // the next transaction starts
		l.tx, l.inTx, l.size = l.tx+1, 0, (l.tx+1)%5+1
	}
	l.i++
	l.inTx++
	i, tx := l.i, l.tx
	agg := aggregates[i%len(aggregates)]
	payload := fmt.Appendf(nil, `{"n":%d,"note":"ä \"quoted\""}`, i)
	if i%7 == 0 {
		payload = append(payload, 0, 0xff, '\n', 0x80) // bytea: raw bytes
	}
	var headers []decode.Header
	if i%4 < 2 { // two with a column header, then two without: the sink's reused header map must follow
		headers = []decode.Header{{Name: "Trace-Context", Value: "00-trace-" + strconv.Itoa(i)}}
	}
	return &decode.Event{
		ID:            fmt.Sprintf("ev-%05d", i),
		AggregateType: agg.typ,
		AggregateID:   agg.id,
		Type:          []string{"OrderPlaced", "OrderShipped", "AccountOpened"}[i%3],
		Payload:       payload,
		Headers:       headers,
		CommitLSN:     firstLSN + pglogrepl.LSN(tx)*0x38,
		TxSeq:         uint32(l.inTx),
		CommitTime:    baseTime.Add(time.Duration(tx) * time.Millisecond),
		Xid:           uint32(1000 + tx),
		Table:         "public.outbox",
	}
}

// makeEvents returns events from..to (1-based, inclusive) of the eventLog.
// Calling it twice gives equal, unshared events.
func makeEvents(from, to int) []*decode.Event {
	var evs []*decode.Event
	l := newEventLog()
	for i := 1; i <= to; i++ {
		ev := l.next()
		if i >= from {
			evs = append(evs, ev)
		}
	}
	return evs
}

// subjectOf is the subject the default template gives ev.
func subjectOf(ev *decode.Event) string {
	for _, a := range aggregates {
		if a.typ == ev.AggregateType && a.id == ev.AggregateID {
			return a.subject
		}
	}
	panic("event of an unknown aggregate: " + ev.AggregateType + "/" + ev.AggregateID)
}

// lsnString formats lsn in Postgres' X/X form, independently of pglogrepl.
func lsnString(lsn pglogrepl.LSN) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}

const (
	testStream  = "OUTBOX"
	testSubject = "outbox.{aggregate_type}.{aggregate_id}"
)

// connect returns a connection that reconnects forever without buffering,
// like the relay's (natsconn.go).
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.FlusherTimeout(5*time.Second),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// startSink creates a sink on nc and runs it until the test ends. cfg.Stream,
// cfg.Subject and cfg.Logger get test defaults when empty.
func startSink(t *testing.T, nc *nats.Conn, cfg sink.Config, a sink.Acker) *sink.Sink {
	t.Helper()
	s := newSink(t, nc, cfg, a)
	run(t, s)
	return s
}

func newSink(t *testing.T, nc *nats.Conn, cfg sink.Config, a sink.Acker) *sink.Sink {
	t.Helper()
	if cfg.Stream == "" {
		cfg.Stream = testStream
	}
	if cfg.Subject == "" {
		cfg.Subject = testSubject
	}
	if cfg.MaxResumeBackoff == 0 {
		cfg.MaxResumeBackoff = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		var logs testenv.SyncBuffer
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		name := t.Name()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of sink %p in %s (tail):\n%s", a, name, tail(logs.String(), 60))
			}
		})
	}
	s, err := sink.New(nc, cfg, a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s.Run until the test ends (or the returned stop is called), and
// checks that Run returns nil when stopped.
func run(t *testing.T, s *sink.Sink) (stop func()) {
	t.Helper()
	return testenv.RunUntilCleanup(t, 15*time.Second, s.Run)
}

// publishWithSink stores evs with a sink of its own on nc, then stops it,
// as a relay that stopped cleanly; it returns that sink's acker.
func publishWithSink(t *testing.T, nc *nats.Conn, cfg sink.Config, evs []*decode.Event, timeout time.Duration) *acker {
	t.Helper()
	a := newAcker()
	s := newSink(t, nc, cfg, a)
	stop := run(t, s)
	publishAll(t, s, evs, timeout)
	stop()
	return a
}

// publishAll hands evs to s, then drains it.
func publishAll(t *testing.T, s *sink.Sink, evs []*decode.Event, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, ev := range evs {
		if err := s.Publish(ctx, ev); err != nil {
			t.Fatalf("Publish(%s): %v", ev.ID, err)
		}
	}
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// storedMsg is one message read back from the stream.
type storedMsg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// readStream returns every message of the stream in sequence order, and
// fails t unless the stream holds exactly its sequences 1..n without gaps.
func readStream(t *testing.T, js jetstream.JetStream, stream string) []storedMsg {
	t.Helper()
	return readStreamFrom(t, js, stream, 1)
}

// readStreamFrom is readStream for a stream whose first sequence is first
// (after a purge, say).
func readStreamFrom(t *testing.T, js jetstream.JetStream, stream string, first uint64) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("look up stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Msgs)
	if n > 0 && (info.State.FirstSeq != first || info.State.LastSeq != first+uint64(n)-1) {
		t.Errorf("stream holds %d messages at sequences %d..%d, want %d..%d", n, info.State.FirstSeq, info.State.LastSeq, first, first+uint64(n)-1)
	}
	if n == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]storedMsg, 0, n)
	for len(out) < n {
		batch, err := cons.Fetch(min(1000, n-len(out)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, storedMsg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read stream %s after %d of %d messages: %v", stream, len(out), n, err)
		}
		if got == 0 {
			t.Fatalf("read stream %s: no message after %d of %d", stream, len(out), n)
		}
	}
	return out
}

// checkExactlyOnceInOrder fails t unless the stream holds exactly want, one
// message per event in that order, each with its event's id and position.
func checkExactlyOnceInOrder(t *testing.T, msgs []storedMsg, want []*decode.Event) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Errorf("stream holds %d messages, want %d", len(msgs), len(want))
	}
	seen := map[string]uint64{}
	bad := 0
	for i, m := range msgs {
		id := m.Header.Get(sink.HeaderMsgID)
		if first, dup := seen[id]; dup && bad < 10 {
			t.Errorf("event %s stored twice: at sequences %d and %d", id, first, m.Seq)
			bad++
		}
		seen[id] = m.Seq
		if i < len(want) && id != want[i].ID && bad < 10 {
			t.Errorf("sequence %d holds event %q, want %q", m.Seq, id, want[i].ID)
			bad++
		}
	}
	for _, ev := range want {
		if _, ok := seen[ev.ID]; !ok && bad < 10 {
			t.Errorf("event %s missing from the stream", ev.ID)
			bad++
		}
	}
}

// waitHealthy waits until the sink reports a flowing chain.
func waitHealthy(t *testing.T, s *sink.Sink) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "sink healthy", func() (bool, error) {
		ok, why := s.Healthy()
		if !ok {
			return false, fmt.Errorf("unhealthy: %s", why)
		}
		return true, nil
	})
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// waitStopped waits until s has stopped for good and returns its Err. While
// it has not, the failure says why s is not healthy, if it is not.
func waitStopped(t *testing.T, s *sink.Sink, what string, timeout time.Duration) error {
	t.Helper()
	var err error
	testenv.WaitFor(t, timeout, what, func() (bool, error) {
		if err = s.Halted(); err != nil {
			return true, nil
		}
		_, why := s.Healthy()
		return false, fmt.Errorf("still running (not healthy because: %q)", why)
	})
	return err
}
