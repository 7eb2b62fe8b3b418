package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/cleanup"
	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/sink"
	"golang.org/x/sync/errgroup"
)

// drainTimeout bounds how long a stop waits for in-flight PubAcks.
const drainTimeout = 30 * time.Second

// relay runs the pipeline until ctx ends: capture → decode → sink, with the
// checkpoint between the sink's acks and the slot. On ctx end it stops
// reading, drains in-flight publishes, confirms, and returns.
func relay(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	oneProc()
	tracker := checkpoint.New(0)
	nc, err := connectNATS(cfg.NATS, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	deadLetter := ""
	if cfg.Errors.InvalidEvent == config.InvalidEventDeadLetter {
		deadLetter = cfg.Errors.DeadLetterSubject
	}
	m := newMetrics()
	tables, subjects, names := sources(cfg.Outbox)
	sk, err := sink.New(nc, sink.Config{
		Stream:            cfg.NATS.Stream,
		Subject:           cfg.NATS.Subject,
		Subjects:          subjects,
		Partitions:        cfg.NATS.Partitions,
		DeadLetterSubject: deadLetter,
		ExtraSubjects:     []string{cfg.Errors.DeadLetterSubject},
		Logger:            log,
		ObserveLatency:    m.observeLatency,
	}, tracker)
	if err != nil {
		return err
	}
	cp := capture.New(capture.Config{
		URL:         cfg.Postgres.URL,
		Slot:        cfg.Postgres.Slot,
		Publication: cfg.Postgres.Publication,
		Tables:      names,
		Messages:    cfg.Outbox.Messages.Prefix != "",
		Logger:      log,
	}, tracker)
	p := &pipeline{tables: tables, messages: cfg.Outbox.Messages.Prefix, tracker: tracker, sink: sk, log: log, deadLetter: deadLetter != ""}
	m.register(cp, sk, tracker, p, nc, cfg.Postgres)

	// The sink and the capture outlive ctx: after the pipeline stops they
	// must still receive PubAcks and confirm the final watermark.
	bg, stopAll := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAll()
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return sk.Run(gctx) })
	g.Go(func() error { return cp.Run(gctx) })
	g.Go(func() error { m.pollLag(gctx, cfg.Postgres.URL, cfg.Postgres.Slot, log); return nil })
	if after := cfg.Outbox.Cleanup.After; after > 0 {
		cl := cleanup.New(cleanup.Config{URL: cfg.Postgres.URL, Tables: names, After: after, Logger: log},
			func() pglogrepl.LSN { return cp.Stats().Confirmed })
		m.registerCleanup(cl)
		g.Go(func() error { cl.Run(gctx); return nil })
	}
	if cfg.HTTP.Listen != "" {
		srv, err := serveHTTP(cfg.HTTP.Listen, m, withNATSReason(readiness(cp, sk, p), nc, cfg.NATS), log)
		if err != nil {
			stopAll()
			return err
		}
		defer srv.Close()
	}
	g.Go(func() error {
		// Stop when asked (ctx) or when a long-lived part fails (gctx).
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-gctx.Done():
				cancel()
			case <-runCtx.Done():
			}
		}()
		err := p.run(runCtx, cp.Messages())
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
		defer dcancel()
		if derr := sk.Drain(dctx); derr != nil && haltReason(p, sk) == "" {
			log.Warn("stopping with events in flight; they will be published again after restart", "err", derr)
		}
		stopAll() // capture confirms the watermark once more, then returns
		return err
	})
	err = g.Wait()
	log.Info("stopped", "confirmed_lsn", cp.Stats().Confirmed.String())
	if h := haltReason(p, sk); err == nil && h != "" {
		return fmt.Errorf("halted: %s", h)
	}
	return err
}

// haltReason says why the relay halted, or "" while it has not: the
// pipeline halts at an event it cannot publish, and the sink at a stream
// that cannot be used any more (one that lost acknowledged events, say).
func haltReason(p *pipeline, sk *sink.Sink) string {
	if h := p.halted(); h != "" {
		return h
	}
	if err := sk.Halted(); err != nil {
		return err.Error()
	}
	return ""
}

// pipeline decodes replication messages into events and hands them to the
// sink, announcing transactions and events to the checkpoint in WAL order.
type pipeline struct {
	tables     []decode.Table
	messages   string // prefix of outbox messages; "" for none
	tracker    *checkpoint.Tracker
	sink       *sink.Sink
	log        *slog.Logger
	deadLetter bool
	halt       atomic.Pointer[string]
	haltEvent  atomic.Pointer[sink.InvalidEventError] // the event halted at, if any
}

func (p *pipeline) halted() string {
	if s := p.halt.Load(); s != nil {
		return *s
	}
	return ""
}

// run processes messages until ctx ends. When an event cannot be published
// it halts: it stops at the event, logs why, and waits for ctx, so the slot
// never passes the event and nothing after it is published (I3).
func (p *pipeline) run(ctx context.Context, msgs <-chan capture.Message) error {
	dec := decode.NewDecoder(p.tables...)
	dec.AcceptMessages(p.messages)
	skip := false // in a transaction that was already fully handed over
	warned := map[string]bool{}
	for {
		var m capture.Message
		select {
		case <-ctx.Done():
			return nil
		case m = <-msgs:
		}
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
				if ev.Invalid != "" && !p.deadLetter {
					return p.stop(ctx, &sink.InvalidEventError{Event: &ev, Reason: ev.Invalid, Fix: sink.InvalidEventFix})
				}
				p.tracker.Add(ev.CommitLSN)
				if err := p.sink.Publish(ctx, &ev); err != nil {
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
func (p *pipeline) stop(ctx context.Context, err error) error {
	msg := err.Error()
	p.halt.Store(&msg)
	attrs := []any{"err", err}
	var inv *sink.InvalidEventError
	if errors.As(err, &inv) {
		p.haltEvent.Store(inv)
		attrs = append(attrs, "event_id", inv.Event.ID, "lsn", inv.Event.CommitLSN.String(), "tx_seq", inv.Event.TxSeq, "table", inv.Event.Table)
	}
	p.log.Error("halted: publishing stopped at this event; the slot will not pass it", attrs...)
	<-ctx.Done()
	return nil
}

// sources returns the decoder's tables, the sink's subject template per
// event source (tables, then messages), and the tables' names.
func sources(o config.Outbox) (tables []decode.Table, subjects, names []string) {
	for _, ct := range o.Tables {
		schema, name := ct.TableName()
		t := decode.Table{
			Schema: schema,
			Name:   name,
			Columns: decode.Columns{
				ID:            ct.Columns.ID,
				AggregateType: ct.Columns.AggregateType,
				AggregateID:   ct.Columns.AggregateID,
				Type:          ct.Columns.Type,
				Payload:       ct.Columns.Payload,
			},
		}
		for _, h := range ct.Headers {
			t.Headers = append(t.Headers, decode.HeaderColumn{Column: h.Column, Header: h.Header})
		}
		tables = append(tables, t)
		subjects = append(subjects, ct.Subject)
		names = append(names, schema+"."+name)
	}
	return tables, append(subjects, o.Messages.Subject), names
}

// readiness reports whether the relay holds the slot and is streaming.
func readiness(cp *capture.Capture, sk *sink.Sink, p *pipeline) func() (bool, string) {
	return func() (bool, string) {
		if h := haltReason(p, sk); h != "" {
			return false, "halted: " + h
		}
		if ok, why := cp.Streaming(); !ok {
			return false, "postgres: " + why
		}
		if ok, why := sk.Healthy(); !ok {
			return false, "nats: " + why
		}
		return true, "streaming"
	}
}

// oneProc runs the relay's goroutines on one P unless GOMAXPROCS is set.
// The pipeline is sequential (one slot, one chain): its goroutines hand
// each event on to the next, and with more Ps every handoff wakes another
// thread. Those wake-ups cost more CPU than the work itself at moderate
// rates, and they take cores from Postgres and nats-server when these share
// the machine. The relay needs about 3.5-4.5 µs of CPU per event (make
// bench), so one P carries over 200k events/s: more than a walsender streams.
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
