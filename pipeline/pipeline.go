// Package pipeline is the relay's core loop: it decodes the replication
// messages of one slot into events, announces transactions and events to
// the checkpoint in WAL order, and hands the events to the publisher. When
// an event cannot be published it halts there, so the slot never passes it.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/sink"
)

// Publisher stores events in the stream: *sink.Sink.
type Publisher interface {
	// Publish hands ev over in order; it returns when ev is queued, or an
	// error when ev cannot be published.
	Publish(ctx context.Context, ev *decode.Event) error
	// Halted says why the publisher stopped for good, or nil.
	Halted() error
}

// Tracker is the checkpoint the pipeline announces transactions and
// events to, in WAL order: *checkpoint.Tracker.
type Tracker interface {
	// Begin opens the transaction committing at commit; false when it was
	// already fully handed over before a reconnect (a replay to skip).
	Begin(commit pglogrepl.LSN) (bool, error)
	// Add counts one more event of the open transaction.
	Add(commit pglogrepl.LSN)
	// Commit closes the open transaction.
	Commit(commit, end pglogrepl.LSN) error
	// Mark says every transaction committing before lsn has been seen.
	Mark(lsn pglogrepl.LSN)
}

// Config is what the pipeline decodes and how it treats invalid events.
type Config struct {
	Tables     []decode.Table
	Messages   string // prefix of outbox messages; "" for none
	DeadLetter bool   // invalid events go to the dead-letter subject instead of halting
	Logger     *slog.Logger
}

// Pipeline is the loop between capture and sink. Create it with New.
type Pipeline struct {
	cfg     Config
	pub     Publisher
	tracker Tracker
	log     *slog.Logger
	halt    atomic.Pointer[HaltError]
}

// New returns a pipeline that publishes to pub and announces to tracker.
// A nil cfg.Logger logs nothing.
func New(cfg Config, pub Publisher, tracker Tracker) *Pipeline {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pipeline{cfg: cfg, pub: pub, tracker: tracker, log: log}
}

// Halted says why the relay halted, or nil while it has not: the pipeline
// halts at an event it cannot publish, and the publisher at a stream that
// cannot be used any more (one that lost acknowledged events, say).
func (p *Pipeline) Halted() *HaltError {
	if h := p.halt.Load(); h != nil {
		return h
	}
	if err := p.pub.Halted(); err != nil {
		return &HaltError{Err: err}
	}
	return nil
}

// Run processes msgs until ctx ends, and then returns nil. When an event
// cannot be published it halts: it stops at the event, logs why, and waits
// for ctx, so the slot never passes the event and nothing after it is
// published (I3). Halted then says why.
func (p *Pipeline) Run(ctx context.Context, msgs <-chan capture.Message) error {
	dec := decode.NewDecoder(p.cfg.Tables...)
	dec.AcceptMessages(p.cfg.Messages)
	skip := false // in a transaction that was already fully handed over
	warned := map[string]bool{}
	// The previous message is released when the loop comes back for the
	// next: by then its event, if any, is in the publisher's window, which
	// bounds its own bytes, and the capture may read that many more.
	var prev capture.Message
	for n := 0; ; n++ {
		prev.Release()
		// A receive that finds a message waiting costs less than a select
		// over two channels, so the select is only for waiting. ctx is
		// still looked at every 256 messages while they keep coming
		// (docs/performance.md, "A receive before the select, and the
		// event by pointer").
		var m capture.Message
		ok := false
		if n%256 != 0 {
			select {
			case m = <-msgs:
				ok = true
			default:
			}
		}
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case m = <-msgs:
			}
		}
		prev = m
		switch m.Kind {
		case capture.Restart:
			dec.Reset()
			skip = false
		case capture.Keepalive:
			p.tracker.Mark(m.WALEnd)
		case capture.Data:
			res, err := dec.Decode(m.Data)
			if err != nil {
				return p.stop(ctx, fmt.Errorf("decode message at %s: %w", m.WALStart, err))
			}
			switch res.Kind {
			case decode.KindBegin:
				ok, err := p.tracker.Begin(res.CommitLSN)
				if err != nil {
					return p.stop(ctx, err)
				}
				skip = !ok
			case decode.KindCommit:
				if skip {
					skip = false
					continue
				}
				if err := p.tracker.Commit(res.CommitLSN, res.EndLSN); err != nil {
					return p.stop(ctx, err)
				}
			case decode.KindEvent:
				if res.Standalone {
					// A non-transactional message: a transaction of its own.
					ok, err := p.tracker.Begin(res.CommitLSN)
					if err != nil {
						return p.stop(ctx, err)
					}
					if !ok {
						continue
					}
				} else if skip {
					continue
				}
				ev := res.Event
				if ev.Invalid != "" && !p.cfg.DeadLetter {
					fix := sink.InvalidEventFix
					if res.Misfit != "" {
						fix = sink.MisfitFix
					}
					return p.stop(ctx, &sink.InvalidEventError{Event: ev, Reason: ev.Invalid, Fix: fix})
				}
				p.tracker.Add(ev.CommitLSN)
				if err := p.pub.Publish(ctx, ev); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return p.stop(ctx, err)
				}
				if res.Standalone {
					if err := p.tracker.Commit(res.CommitLSN, res.EndLSN); err != nil {
						return p.stop(ctx, err)
					}
				}
			case decode.KindRelation:
				if res.Misfit != "" {
					p.log.Warn("the outbox table no longer fits the configured columns: each insert into it is an invalid event until it does",
						"table", res.Table, "reason", res.Misfit)
				}
			case decode.KindChange:
				if key := res.Table + " " + res.Change; !warned[key] && res.Change == "update" {
					warned[key] = true
					p.log.Warn("an outbox row was updated; updates are ignored, only inserts become events", "table", res.Table)
				}
			}
		}
	}
}

// stop halts the pipeline with err and waits for ctx: the relay stays up,
// holds the slot and reports the halt, rather than restarting into the same
// event again and again.
func (p *Pipeline) stop(ctx context.Context, err error) error {
	h := &HaltError{Err: err}
	p.halt.Store(h)
	// The publisher logs its own halt once; a Publish that only returns it
	// says nothing new.
	if pe := p.pub.Halted(); pe == nil || !errors.Is(err, pe) {
		attrs := []any{"err", err}
		if inv := h.Event(); inv != nil {
			attrs = append(attrs, "event_id", inv.Event.ID, "lsn", inv.Event.CommitLSN.String(), "tx_seq", inv.Event.TxSeq, "table", inv.Event.Table)
		}
		p.log.Error("halted: publishing stopped at this event; the slot will not pass it", attrs...)
	}
	<-ctx.Done()
	return nil
}
