// Package sink publishes outbox events to NATS JetStream, exactly once and in
// order. It ensures the stream, renders subjects and headers, and pipelines
// publishes chained on stream sequences (Nats-Expected-Last-Sequence), so the
// server rejects anything that would land out of order. After any error it
// resumes from the stream's last message (DESIGN.md, "How I2 is achieved").
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/backoff"
)

// Acker is told once for every event given to Publish, when the event is
// stored in the stream (or was found already stored).
type Acker interface {
	Ack(commit pglogrepl.LSN)
}

// Config holds the sink's settings. Zero values take the documented defaults.
type Config struct {
	Stream  string // stream name; required
	Subject string // subject template; required
	// Subjects are per-source templates, indexed by Event.Source; a source
	// without one (or with "") uses Subject.
	Subjects []string
	// Partitions is N for the {partition} placeholder.
	Partitions int
	// DeadLetterSubject, when set, is where events that cannot be published
	// as they are go (errors.invalid_event: dead_letter); when empty, such an
	// event halts the sink.
	DeadLetterSubject string
	// ExtraSubjects are subjects the stream must capture besides the template's.
	ExtraSubjects    []string
	Window           int           // events in flight at most; default 4096
	WindowBytes      int           // bytes queued or in flight at most; default DefaultWindowBytes
	AckTimeout       time.Duration // a PubAck not seen by then breaks the chain; default 5s
	Logger           *slog.Logger  // default slog.Default()
	ObserveLatency   func(time.Duration)
	MaxResumeBackoff time.Duration // default 5s
	// CloudEvents, when set, adds the CloudEvents attributes as ce- headers
	// (nats.format: cloudevents).
	CloudEvents *CloudEvents
}

// Stats are counters for metrics.
type Stats struct {
	Published    uint64 // events stored
	DeadLettered uint64 // of which on the dead-letter subject
	InFlight     int
	Resumes      uint64
}

// Sink is the JetStream side of the relay. Publish enqueues; Run sends,
// receives PubAcks and resumes the chain. Call Run exactly once.
type Sink struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	subject  *Subject   // the default template
	subjects []*Subject // by Event.Source
	acker    Acker
	log      *slog.Logger
	inbox    string

	kick chan struct{} // wakes Run; capacity 1

	mu   sync.Mutex
	cond *sync.Cond // broadcast when the window has room or state changes
	// queue holds events handed to Publish and not yet acked, in WAL order.
	// queue[head:sent] are on the wire; queue[sent:] wait for Run.
	queue       []*inflight
	head, sent  int
	queuedBytes int
	stream      jetstream.Stream
	nextSeq     uint64   // stream sequence the next send takes
	epoch       uint64   // bumped by every resume; stale PubAcks are ignored
	reply       string   // where this epoch's PubAcks go: inbox + epoch
	maxMsgSize  int      // the stream's max_msg_size as last read; <= 0 for none
	seenSeq     uint64   // the highest stream sequence seen stored; the stream never goes below it
	broken      error    // why the chain needs a resume, which Run does (not a halt); nil while healthy
	resumed     bool     // the first resume is done
	halt        error    // why the sink halted: it sends nothing more (see Halted); nil until then
	dupSeq      uint64   // the sequence a duplicate PubAck named, for the next resume to look at; 0 for none
	probing     bool     // the epoch's first send is on the wire, alone, until its PubAck settles it (see sendQueued)
	staleProbe  bool     // the last probe was refused for a wrong last sequence (said at info; a second in a row warns)
	last        Position // newest position enqueued or stored
	stored      Position // newest position acked by the stream

	published    atomic.Uint64
	deadLettered atomic.Uint64
	resumes      atomic.Uint64

	// Owned by Run: reused for every send.
	msg        nats.Msg
	subjBuf    []byte
	hdrBuf     []byte        // the base headers in wire form (rawheaders.go)
	txLSN      pglogrepl.LSN // the transaction whose texts follow
	txLSNText  string
	txTimeText string
	hdrVals    [len(baseHeaders)][]string // the values of baseHeaders, which m.Header holds
	hdrExtra   bool                       // m.Header also holds other keys
	// With CloudEvents: the values of ceHeaders, which m.Header also holds,
	// and the encoded sources and content type.
	ceVals        [len(ceHeaders)][]string
	ceSources     []string
	ceContentType string
	// unasked counts the sends since the last one that asked for a PubAck,
	// and unaskedBytes their sizes; unasked < 0 until the epoch's first send.
	unasked, unaskedBytes int
	batch                 []*inflight // the burst being sent
}

// DefaultWindow is how many events are in flight at most when
// Config.Window is not set.
const DefaultWindow = 4096

// DefaultWindowBytes is how many bytes of events (payloads and ids, with a
// fixed allowance for the rest) Publish queues and Run keeps in flight at
// most when Config.WindowBytes is not set. With the capture's own budget it
// bounds the relay's memory by bytes (docs/design.md, I4); small events
// reach DefaultWindow first.
const DefaultWindowBytes = 16 << 20

type inflight struct {
	ev   *decode.Event
	seq  uint64 // stream sequence it was sent to take
	sent time.Time
	size int
	// reused says that the stream already holds another event with this
	// event's id (see reusedID); "" for none.
	reused string
}

func parseSubject(tmpl string, partitions int) (*Subject, error) {
	s, err := ParseSubject(tmpl)
	if err != nil {
		return nil, err
	}
	if s.UsesPartition() && partitions < 1 {
		return nil, fmt.Errorf("subject template %q uses {partition}: set the number of partitions (nats.partitions)", tmpl)
	}
	s.Partitions = partitions
	return s, nil
}

// subjectOf returns the template for ev.
func (s *Sink) subjectOf(ev *decode.Event) *Subject {
	if ev.Source >= 0 && ev.Source < len(s.subjects) {
		return s.subjects[ev.Source]
	}
	return s.subject
}

// streamSubjects returns the subjects the stream must capture besides
// "<default prefix>.>": every other template's prefix, and the extras.
func (s *Sink) streamSubjects() []string {
	var extra []string
	for _, subj := range s.subjects {
		if w := subj.Prefix + ".>"; subj.Prefix != s.subject.Prefix && !slices.Contains(extra, w) {
			extra = append(extra, w)
		}
	}
	return append(extra, s.cfg.ExtraSubjects...)
}

// New returns a sink that publishes on nc. Nothing is sent before Run.
func New(nc *nats.Conn, cfg Config, acker Acker) (*Sink, error) {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.WindowBytes <= 0 {
		cfg.WindowBytes = DefaultWindowBytes
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.MaxResumeBackoff <= 0 {
		cfg.MaxResumeBackoff = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	subj, err := parseSubject(cfg.Subject, cfg.Partitions)
	if err != nil {
		return nil, err
	}
	subjects := make([]*Subject, len(cfg.Subjects))
	for i, tmpl := range cfg.Subjects {
		subjects[i] = subj
		if tmpl != "" && tmpl != cfg.Subject {
			if subjects[i], err = parseSubject(tmpl, cfg.Partitions); err != nil {
				return nil, err
			}
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Sink{
		cfg: cfg, nc: nc, js: js, subject: subj, subjects: subjects, acker: acker,
		log:    cfg.Logger.With("stream", cfg.Stream),
		inbox:  nc.NewInbox() + ".",
		kick:   make(chan struct{}, 1),
		broken: errors.New("not started"),
	}
	s.cond = sync.NewCond(&s.mu)
	s.msg.Header = nats.Header{}
	for i, k := range baseHeaders {
		s.hdrVals[i] = make([]string, 1)
		s.msg.Header[k] = s.hdrVals[i]
	}
	if ce := cfg.CloudEvents; ce != nil {
		for i, k := range ceHeaders {
			s.ceVals[i] = make([]string, 1)
			s.msg.Header[k] = s.ceVals[i]
		}
		for _, src := range ce.Sources {
			s.ceSources = append(s.ceSources, ceEncode(src))
		}
		s.ceContentType = ceEncode(ce.DataContentType)
	}
	return s, nil
}

// Publish hands ev to the sink; the sink owns ev from now on. It blocks while
// the window is full. An event at or before a position already handed over or
// stored is acked at once and not sent again. It returns an error only when
// ctx ends or the sink has halted.
func (s *Sink) Publish(ctx context.Context, ev *decode.Event) error {
	if ev.Invalid == "" {
		ev.Invalid = s.whyInvalid(ev)
	}
	if ev.Invalid != "" && s.cfg.DeadLetterSubject == "" {
		return &InvalidEventError{Event: ev, Reason: ev.Invalid, Fix: InvalidEventFix}
	}
	size := len(ev.Payload) + len(ev.ID) + len(ev.AggregateID) + 256
	s.mu.Lock()
	for {
		if s.halt != nil {
			err := s.halt
			s.mu.Unlock()
			return err
		}
		if s.resumed && ev.AtOrBefore(s.last.CommitLSN, s.last.TxSeq) {
			s.mu.Unlock()
			s.acker.Ack(ev.CommitLSN)
			return nil
		}
		n := len(s.queue) - s.head
		if n == 0 || (n < s.cfg.Window && s.queuedBytes+size <= s.cfg.WindowBytes) {
			break
		}
		if err := s.wait(ctx); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	s.queue = append(s.queue, &inflight{ev: ev, size: size})
	s.queuedBytes += size
	s.last = Position{ev.CommitLSN, ev.TxSeq}
	s.mu.Unlock()
	s.signal()
	return nil
}

// Drain waits until every event handed to Publish is stored, or ctx ends.
func (s *Sink) Drain(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > s.head {
		if s.halt != nil {
			return s.halt
		}
		if err := s.wait(ctx); err != nil {
			return fmt.Errorf("drain: %d events still in flight: %w", len(s.queue)-s.head, err)
		}
	}
	return nil
}

// wait blocks on cond until a broadcast or ctx ends. s.mu must be held.
func (s *Sink) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	s.cond.Wait()
	stop()
	return ctx.Err()
}

// Healthy reports whether the chain is flowing, and if not, why.
func (s *Sink) Healthy() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.halt != nil:
		return false, s.halt.Error()
	case s.broken != nil:
		return false, s.broken.Error()
	case !s.nc.IsConnected():
		return false, "not connected to NATS (" + s.nc.Status().String() + ")"
	}
	return true, ""
}

// Stats returns counters for metrics.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	n := len(s.queue) - s.head
	s.mu.Unlock()
	return Stats{Published: s.published.Load(), DeadLettered: s.deadLettered.Load(), InFlight: n, Resumes: s.resumes.Load()}
}

func (s *Sink) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Halted returns why the sink halted, or nil.
func (s *Sink) Halted() error { return s.haltErr() }

// Run sends enqueued events, watches for lost PubAcks and resumes the chain
// after any error, until ctx ends. When the sink halts (see Halted) it
// sends nothing more but keeps settling PubAcks of what it sent.
func (s *Sink) Run(ctx context.Context) error {
	sub, err := s.nc.Subscribe(s.inbox+"*", s.onAck)
	if err != nil {
		return fmt.Errorf("subscribe to PubAcks: %w", err)
	}
	defer sub.Unsubscribe()
	// Pending limits would drop PubAcks; the window already bounds them.
	_ = sub.SetPendingLimits(-1, -1)

	tick := time.NewTicker(s.cfg.AckTimeout / 5)
	defer tick.Stop()
	s.signal() // resume at once: the first resume finds the stream's position
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: s.cfg.MaxResumeBackoff}
	// rebroken: the last resume succeeded, and atResume events were stored
	// by its end; a break with no more stored since then is a break again.
	rebroken, atResume := false, uint64(0)
	settledAt := s.published.Load()
	logged := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-tick.C:
		}
		s.mu.Lock()
		if halt := s.halt; halt != nil {
			s.mu.Unlock()
			if !logged {
				// Say it now: the pipeline may not publish again for a long
				// time, and an operator must not have to guess (I3).
				logged = true
				attrs := []any{"err", halt}
				var inv *InvalidEventError
				if errors.As(halt, &inv) {
					attrs = append(attrs, "event_id", inv.Event.ID, "lsn", inv.Event.CommitLSN.String(), "tx_seq", inv.Event.TxSeq, "table", inv.Event.Table)
				}
				s.log.Error("halted: publishing stopped; the slot will not pass the events not yet stored", attrs...)
			}
			continue
		}
		if s.broken == nil && s.head < s.sent && time.Since(s.queue[s.head].sent) > s.cfg.AckTimeout {
			s.breakLocked(fmt.Errorf("no PubAck for stream sequence %d within %s", s.queue[s.head].seq, s.cfg.AckTimeout))
		}
		broken := s.broken
		s.mu.Unlock()
		if broken != nil {
			if rebroken && s.published.Load() == atResume {
				// The chain broke again with nothing stored since the last
				// resume: the stream refuses an event, say. Wait as after a
				// failed resume, rather than resume and send in a tight loop.
				if !backoff.Sleep(ctx, retry.Next()) {
					return nil
				}
			}
			if err := s.resume(ctx); err != nil {
				rebroken = false
				if s.haltErr() != nil {
					continue
				}
				wait := retry.Next()
				s.log.Warn("publish chain not resumed, retrying", "err", err, "retry_in", retry.Current())
				if !backoff.Sleep(ctx, wait) {
					return nil
				}
				s.signal()
				continue
			}
			rebroken, atResume = true, s.published.Load()
		}
		if n := s.published.Load(); n != settledAt {
			settledAt = n
			retry.Reset() // progress: the next break starts a fresh backoff
		}
		s.sendQueued()
	}
}
