package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/cleanup"
	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/natsconn"
	"github.com/outboxrelay/outboxrelay/pipeline"
	"github.com/outboxrelay/outboxrelay/sink"
	"golang.org/x/sync/errgroup"
)

// drainTimeout bounds how long a stop waits for in-flight PubAcks.
const drainTimeout = 30 * time.Second

// relay runs one relay until ctx ends: capture → pipeline → sink, with the
// checkpoint between the sink's acks and the slot. On ctx end it stops
// reading, drains in-flight publishes, confirms, and returns. A halt
// returns a *pipeline.HaltError once ctx ends.
func relay(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	oneProc()
	collectorSettings()
	if cfg.Outbox.Backfill == config.BackfillExisting {
		// Before the relay's own sink resumes: it then finds the backfilled
		// rows as the stream's tail.
		res, err := recoverFromTable(ctx, cfg, false, true, 0, log)
		if err != nil {
			return fmt.Errorf("backfill (outbox.backfill: existing): %w", err)
		}
		if !res.Skipped {
			log.Info("backfilled the rows already in the outbox tables", "rows", res.Rows, "in_stream", res.InStream, "published", res.Published, "consistent_point", res.Consistent.String())
		}
	}
	tracker := checkpoint.New(0)
	nopts := natsOptions(cfg.NATS, log)
	nc, err := natsconn.Connect(nopts)
	if err != nil {
		return err
	}
	defer nc.Close()

	m := newMetrics()
	sc := sinkConfig(cfg)
	sc.Logger, sc.ObserveLatency = log, m.observeLatency
	sk, err := sink.New(nc, sc, tracker)
	if err != nil {
		return err
	}
	cc := captureConfig(cfg)
	cc.Logger = log
	cc.Verify = verifier(sk, log)
	cp := capture.New(cc, tracker)
	tables, _, _ := sources(cfg.Outbox)
	p := pipeline.New(pipeline.Config{
		Tables:     tables,
		Messages:   cfg.Outbox.Messages.Prefix,
		DeadLetter: sc.DeadLetterSubject != "",
		Logger:     log,
	}, sk, tracker)
	ready := readiness(cp, sk, p)
	m.register(cp, sk, tracker, p, ready, nc)

	// The sink and the capture outlive ctx: after the pipeline stops they
	// must still receive PubAcks and confirm the final watermark.
	bg, stopAll := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAll()
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return sk.Run(gctx) })
	g.Go(func() error { return cp.Run(gctx) })
	g.Go(func() error { m.pollLag(gctx, cfg.Postgres.URL, cfg.Postgres.Slot, log); return nil })
	if after := cfg.Outbox.Cleanup.After; after > 0 {
		cl := cleanup.New(cleanup.Config{URL: cfg.Postgres.URL, Tables: cc.Tables, After: after, Logger: log},
			func() pglogrepl.LSN { return cp.Stats().Confirmed })
		m.registerCleanup(cl)
		g.Go(func() error { cl.Run(gctx); return nil })
	}
	if cfg.HTTP.Listen != "" {
		srv, err := serveHTTP(cfg.HTTP.Listen, m, withNATSReason(ready, nc, nopts), log)
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
		err := p.Run(runCtx, cp.Messages())
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
		defer dcancel()
		if derr := sk.Drain(dctx); derr != nil && p.Halted() == nil {
			log.Warn("stopping with events in flight; they will be published again after restart", "err", derr)
		}
		stopAll() // capture confirms the watermark once more, then returns
		return err
	})
	err = g.Wait()
	log.Info("stopped", "confirmed_lsn", cp.Stats().Confirmed.String())
	if h := p.Halted(); err == nil && h != nil {
		return h
	}
	if h := cp.Halted(); err == nil && h != nil {
		return &pipeline.HaltError{Err: h}
	}
	return err
}

// verifier is the capture's continuity check (I7): the slot must continue
// where the stream ends. When it does, and the stream has no origin
// recorded yet (a first start, or a stream from before the check), it
// records this session's.
func verifier(sk *sink.Sink, log *slog.Logger) func(context.Context, continuity.Facts) error {
	return func(ctx context.Context, f continuity.Facts) error {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		end, err := sk.End(qctx)
		if err != nil {
			return fmt.Errorf("continuity check: %w", err)
		}
		if err := continuity.Judge(f, end); err != nil {
			return err
		}
		if end.HasOrigin && end.Origin == f.Origin {
			return nil
		}
		if err := sk.RecordOrigin(qctx, f.Origin); err != nil {
			return fmt.Errorf("continuity check: %w", err)
		}
		log.Info("recorded the stream's origin", "system_id", f.SystemID, "database", f.Database, "publication", f.Publication)
		return nil
	}
}

// captureConfig is the capture's part of cfg, shared by run and check.
func captureConfig(cfg config.Config) capture.Config {
	_, _, names := sources(cfg.Outbox)
	return capture.Config{
		URL:           cfg.Postgres.URL,
		Slot:          cfg.Postgres.Slot,
		Publication:   cfg.Postgres.Publication,
		Tables:        names,
		Messages:      cfg.Outbox.Messages.Prefix != "",
		FailoverSlot:  cfg.Postgres.FailoverSlot,
		ReceiveBuffer: cfg.Postgres.ReceiveBuffer,
	}
}

// sinkConfig is the sink's part of cfg, shared by run and check.
func sinkConfig(cfg config.Config) sink.Config {
	_, subjects, _ := sources(cfg.Outbox)
	sc := sink.Config{
		Stream:        cfg.NATS.Stream,
		Subject:       cfg.NATS.Subject,
		Subjects:      subjects,
		Partitions:    cfg.NATS.Partitions,
		ExtraSubjects: []string{cfg.Errors.DeadLetterSubject},
	}
	if cfg.Errors.InvalidEvent == config.InvalidEventDeadLetter {
		sc.DeadLetterSubject = cfg.Errors.DeadLetterSubject
	}
	if cfg.NATS.Format == config.FormatCloudEvents {
		sc.CloudEvents = cloudEvents(cfg)
	}
	return sc
}

// cloudEvents is the sink's CloudEvents setting: ce-source per event
// source (tables, then messages), nats.cloudevents.source or by default
// /postgres/<database>/<schema.table>, which names where the event was
// written and is the same for every relay on that database. Each segment is
// path-escaped, so the default is a URI reference whatever the names.
func cloudEvents(cfg config.Config) *sink.CloudEvents {
	ce := &sink.CloudEvents{DataContentType: cfg.NATS.CloudEvents.DataContentType}
	db := "postgres"
	if pc, err := pgconn.ParseConfig(cfg.Postgres.URL); err == nil {
		// Without a database Postgres connects to the user's namesake.
		if pc.Database != "" {
			db = pc.Database
		} else if pc.User != "" {
			db = pc.User
		}
	}
	_, _, names := sources(cfg.Outbox)
	var paths []string
	for _, name := range names {
		paths = append(paths, url.PathEscape(name))
	}
	for _, path := range append(paths, "pg_logical_emit_message/"+url.PathEscape(cfg.Outbox.Messages.Prefix)) {
		src := cfg.NATS.CloudEvents.Source
		if src == "" {
			src = "/postgres/" + url.PathEscape(db) + "/" + path
		}
		ce.Sources = append(ce.Sources, src)
	}
	return ce
}

// natsOptions is the NATS connection's part of cfg, shared by run and
// check.
func natsOptions(c config.NATS, log *slog.Logger) natsconn.Options {
	return natsconn.Options{
		URLs: c.URLs(), Creds: c.Creds, NKey: c.NKey, User: c.User, Password: c.Password, Token: c.Token,
		CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key, Logger: log,
	}
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

// readyState is the relay's readiness, as /readyz and outboxrelay_ready
// report it.
type readyState struct {
	ready   bool   // holds the slot and streams
	standby bool   // healthy, and waits to take over (/readyz?standby=ok)
	why     string // what /readyz says
}

// readiness reports whether the relay holds the slot and is streaming.
func readiness(cp *capture.Capture, sk *sink.Sink, p *pipeline.Pipeline) func() readyState {
	return func() readyState {
		if h := p.Halted(); h != nil {
			return readyState{why: h.Error()}
		}
		if h := cp.Halted(); h != nil {
			return readyState{why: "halted: " + h.Error()}
		}
		streaming, pgWhy := cp.Streaming()
		if !streaming && !cp.Standby() {
			return readyState{why: "postgres: " + pgWhy}
		}
		if ok, why := sk.Healthy(); !ok {
			return readyState{why: "nats: " + why}
		}
		if !streaming {
			return readyState{standby: true, why: "standby: " + pgWhy}
		}
		return readyState{ready: true, why: "streaming"}
	}
}

// withNATSReason adds to ready's answer, when it is not ready, why the NATS
// connection is down and how to fix it (the sink only knows that it is).
func withNATSReason(ready func() readyState, nc *nats.Conn, o natsconn.Options) func() readyState {
	return func() readyState {
		st := ready()
		if !st.ready {
			if r := natsconn.DownReason(nc, o); r != "" {
				st.why += " (" + r + ")"
			}
		}
		return st
	}
}

// oneProc runs the relay's goroutines on one P unless GOMAXPROCS is set.
// The pipeline is sequential (one slot, one chain): its goroutines hand
// each event on to the next, and with more Ps every handoff wakes another
// thread. Those wake-ups cost more CPU than the work itself at moderate
// rates, and they take cores from Postgres and nats-server when these share
// the machine. One P carries more events a second than a walsender streams
// (docs/performance.md, "Where the time goes").
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// gcPercent is the relay's GC target (Go's GOGC) unless GOGC is set. In a
// drain the relay holds only 3-5 MB that the collector must keep, so at
// Go's 100 it collected after every 6-7 MB allocated, 11 times a second,
// and allocation and collection took 29% of its CPU. At 200 it collects
// half as often, for 13% less CPU per event and a peak RSS about 6 MiB
// higher (docs/performance.md, "The collector's settings").
const gcPercent = 200

// memoryLimit is the soft memory limit (Go's GOMEMLIMIT) the relay sets
// unless GOMEMLIMIT is set: twice the byte budgets of what it holds
// (docs/design.md, "How I4 is kept"), plus 8 MiB for the runtime's own.
// It binds only with large events, which fill the budgets: there the
// collector runs before the heap reaches it, near where it ran at Go's
// default GC target, so the peak stays about what it was. With small
// events the budgets stay far from full, and gcPercent sets the pace.
const memoryLimit = 2*(sink.DefaultWindowBytes+capture.DefaultBufferBytes) + 8<<20

// collectorSettings sets gcPercent and memoryLimit, each unless the
// operator set its environment variable.
func collectorSettings() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}
