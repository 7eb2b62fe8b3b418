package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Event is one outbox event as the relay publishes it.
type Event struct {
	ID            string // Nats-Msg-Id: the outbox row's id, the same on every copy
	Type          string // Outbox-Event-Type
	AggregateType string // Outbox-Aggregate-Type, unescaped
	AggregateID   string // Outbox-Aggregate-Id, unescaped
	Subject       string
	Data          []byte      // the payload column, unchanged
	Header        nats.Header // all headers, including Outbox-Commit-LSN and Outbox-Commit-Time
	StreamSeq     uint64      // the message's sequence in the stream
	Delivered     uint64      // 1 on the first delivery, more on redeliveries
}

// Handler applies one event. It is called at most once at a time per
// aggregate, in the aggregate's order. An error makes the consumer retry the
// same event (and hold back the rest of its aggregate) until it succeeds or
// the consumer stops.
type Handler func(ctx context.Context, ev Event) error

// Config says which events a Consumer reads and how.
type Config struct {
	// Stream is the relay's stream. Default "OUTBOX".
	Stream string
	// Durable is the consumer's name: JetStream remembers its position
	// across restarts. Required. Run one process per durable: two processes
	// sharing one would each get part of an aggregate's events.
	Durable string
	// FilterSubject selects events, e.g. "outbox.order.>". Default: the
	// whole stream.
	FilterSubject string
	// Workers is how many events are handled at once, each worker owning
	// the aggregates that hash to it. Default 4.
	Workers int
	// Buffer is how many events wait per worker. Default 64. JetStream
	// delivers at most Workers*Buffer unacknowledged events (MaxAckPending).
	Buffer int
	// AckWait is how long JetStream waits for an ack before it delivers an
	// event again. A redelivered event that was already handled is acked
	// and skipped. Default 30s.
	AckWait time.Duration
	// MaxBackoff caps the wait between retries of a failing handler.
	// Default 5s.
	MaxBackoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Stats counts what a Consumer did.
type Stats struct {
	Handled     uint64 // events handled (the handler returned nil)
	Duplicates  uint64 // copies skipped because their event was already handled
	Redelivered uint64 // messages JetStream delivered more than once
}

// Consumer reads the relay's events from a durable JetStream pull consumer
// with explicit acks, handles events of different aggregates in parallel and
// events of one aggregate in order, and handles each event once (by its
// Nats-Msg-Id, through a Deduper).
type Consumer struct {
	cfg    Config
	handle Handler
	dedupe Deduper
	log    *slog.Logger

	handled, duplicates, redelivered atomic.Uint64
}

// New returns a Consumer; Run starts it.
func New(cfg Config, h Handler, d Deduper) (*Consumer, error) {
	if cfg.Durable == "" {
		return nil, errors.New("consumer: Config.Durable is required: name the consumer so JetStream keeps its position")
	}
	if h == nil || d == nil {
		return nil, errors.New("consumer: a Handler and a Deduper are required")
	}
	if cfg.Stream == "" {
		cfg.Stream = "OUTBOX"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("stream", cfg.Stream, "durable", cfg.Durable)
	return &Consumer{cfg: cfg, handle: h, dedupe: d, log: log}, nil
}

// Stats returns the counts so far.
func (c *Consumer) Stats() Stats {
	return Stats{Handled: c.handled.Load(), Duplicates: c.duplicates.Load(), Redelivered: c.redelivered.Load()}
}

// Run consumes until ctx is cancelled (then it returns nil) or the
// subscription fails. Events handed to workers but not handled when ctx ends
// stay unacknowledged; the next Run delivers them again, in order.
func (c *Consumer) Run(ctx context.Context, js jetstream.JetStream) error {
	cons, err := c.open(ctx, js)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(c.cfg.Buffer))
	if err != nil {
		return fmt.Errorf("consume %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
	}
	defer it.Stop()

	lanes := make([]chan jetstream.Msg, c.cfg.Workers)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan jetstream.Msg, c.cfg.Buffer)
		wg.Go(func() {
			for msg := range lanes[i] {
				if ctx.Err() == nil {
					c.process(ctx, msg)
				} // else leave it unacknowledged for the next Run
			}
		})
	}
	defer func() {
		for _, l := range lanes {
			close(l)
		}
		wg.Wait()
	}()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return fmt.Errorf("consume %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
		case err != nil:
			// Missed heartbeats and the like: the iterator recovers.
			c.log.Warn("pull", "err", err)
			continue
		}
		select {
		case lanes[c.lane(msg)] <- msg:
		case <-ctx.Done():
			return nil
		}
	}
}

// lane picks the worker for msg: all events of one aggregate go to the same
// worker, which handles them one at a time, in the order they arrive.
func (c *Consumer) lane(msg jetstream.Msg) int {
	h := fnv.New64a()
	typ, id := msg.Headers().Get("Outbox-Aggregate-Type"), msg.Headers().Get("Outbox-Aggregate-Id")
	if typ == "" && id == "" {
		h.Write([]byte(msg.Subject())) // not from the relay: the subject is all there is
	} else {
		// The headers, not the subject: a template with {type} puts one
		// aggregate on several subjects.
		h.Write([]byte(typ))
		h.Write([]byte{0})
		h.Write([]byte(id))
	}
	return int(h.Sum64() % uint64(c.cfg.Workers))
}

// open returns the durable consumer, creating it if missing. JetStream
// redelivers an unacknowledged event only after AckWait, while it already
// delivers newer ones: after a stop with events in flight, a later event of
// an aggregate could be handled before an earlier one. So when the durable
// has unacknowledged events, open recreates it from its ack floor: the
// events after it come again in stream order, and those already handled are
// skipped by the Deduper. This is why one process per durable is the rule.
func (c *Consumer) open(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		FilterSubject: c.cfg.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxAckPending: c.cfg.Workers * c.cfg.Buffer,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	existing, err := js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return nil, fmt.Errorf("look up consumer %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
	default:
		info := existing.CachedInfo()
		if info.NumAckPending == 0 {
			// Nothing in flight: keep the position, update the rest.
			cfg.DeliverPolicy, cfg.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartSeq
			break
		}
		c.log.Info("resuming from the ack floor", "ack_floor", info.AckFloor.Stream, "ack_pending", info.NumAckPending)
		if err := js.DeleteConsumer(ctx, c.cfg.Stream, c.cfg.Durable); err != nil {
			return nil, fmt.Errorf("recreate consumer %s/%s from its ack floor: %w", c.cfg.Stream, c.cfg.Durable, err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, info.AckFloor.Stream+1
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s/%s: %w", c.cfg.Stream, c.cfg.Durable, err)
	}
	return cons, nil
}

// process handles one message: skip it if its event was handled, else
// handle it (retrying in place), record it, and ack it.
func (c *Consumer) process(ctx context.Context, msg jetstream.Msg) {
	ev := eventOf(msg)
	if ev.Delivered > 1 {
		c.redelivered.Add(1)
	}
	log := c.log.With("event_id", ev.ID, "stream_seq", ev.StreamSeq)
	if ev.ID == "" {
		// Without an id there is no way to recognise a repeat.
		log.Error("message without Nats-Msg-Id: not an outbox event; terminating it", "subject", ev.Subject)
		msg.Term()
		return
	}
	var dup bool
	if !c.retry(ctx, msg, log, "check deduplication", func() (err error) {
		dup, err = c.dedupe.Handled(ctx, ev.ID)
		return err
	}) {
		return
	}
	if !dup {
		if !c.retry(ctx, msg, log, "handle", func() error { return c.handle(ctx, ev) }) ||
			!c.retry(ctx, msg, log, "record as handled", func() error { return c.dedupe.MarkHandled(ctx, ev.ID) }) {
			return
		}
	}
	// A lost ack only means a redelivery, which the Deduper absorbs.
	if err := msg.Ack(); err != nil {
		log.Warn("ack", "err", err)
	}
	if dup {
		c.duplicates.Add(1)
		log.Debug("skipped a repeat of a handled event")
	} else {
		c.handled.Add(1)
	}
}

// retry runs f until it succeeds (true) or ctx ends (false), backing off and
// telling JetStream the message is still being worked on, so that it holds
// back the redelivery.
func (c *Consumer) retry(ctx context.Context, msg jetstream.Msg, log *slog.Logger, what string, f func() error) bool {
	backoff := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn(what+" failed; retrying, holding back the aggregate's later events", "err", err, "retry_in", backoff)
		msg.InProgress()
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

func eventOf(msg jetstream.Msg) Event {
	h := msg.Headers()
	ev := Event{
		ID:            h.Get("Nats-Msg-Id"),
		Type:          h.Get("Outbox-Event-Type"),
		AggregateType: h.Get("Outbox-Aggregate-Type"),
		AggregateID:   h.Get("Outbox-Aggregate-Id"),
		Subject:       msg.Subject(),
		Data:          msg.Data(),
		Header:        h,
	}
	if md, err := msg.Metadata(); err == nil {
		ev.StreamSeq, ev.Delivered = md.Sequence.Stream, md.NumDelivered
	}
	return ev
}
