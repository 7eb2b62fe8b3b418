package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/natsconn"
	"github.com/outboxrelay/outboxrelay/sink"
)

// checkTimeout bounds each half (Postgres, NATS) of the preflight.
const checkTimeout = 30 * time.Second

// finding is one line of check's report.
type finding struct {
	status string // "ok", "warn" or "FAIL"
	item   string
	text   string
}

// check is the preflight: it checks everything run needs from Postgres and
// NATS, without changing anything, and prints one line per item:
//
//	ok    postgres wal_level: logical
//	FAIL  postgres role: role "relay" may not start logical replication: run ALTER ROLE ...
//
// A FAIL line says what was found and the fix, with the same words run
// uses for the same problem. It returns an error (exit 1) when an item
// failed; warnings do not fail.
func check(ctx context.Context, cfg config.Config, out io.Writer) error {
	red := cfg.Redacted()
	found := []finding{{"ok", "config", fmt.Sprintf("valid; postgres %s, nats %s", red.Postgres.URL, red.NATS.URL)}}
	found = append(found, checkPostgres(ctx, cfg)...)
	found = append(found, checkNATS(ctx, cfg)...)
	found = append(found, checkContinuity(ctx, cfg)...)

	fails, warns := 0, 0
	for _, f := range found {
		// One line per item, whatever a server's error holds.
		text := strings.Join(strings.Fields(f.text), " ")
		fmt.Fprintf(out, "%-4s  %s: %s\n", f.status, f.item, text)
		switch f.status {
		case "FAIL":
			fails++
		case "warn":
			warns++
		}
	}
	if fails > 0 {
		fmt.Fprintf(out, "not ready: %s failed, %s\n", plural(fails, "item"), plural(warns, "warning"))
		return fmt.Errorf("not ready: %s failed; fix the FAIL lines above and run check again", plural(fails, "item"))
	}
	fmt.Fprintf(out, "ready, %s\n", plural(warns, "warning"))
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func checkPostgres(ctx context.Context, cfg config.Config) []finding {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	pc := capture.PreflightConfig{Config: captureConfig(cfg), Cleanup: cfg.Outbox.Cleanup.After > 0}
	names := pc.Config.Tables
	for i, t := range cfg.Outbox.Tables {
		ot := capture.OutboxTable{
			Table:         names[i],
			ID:            t.Columns.ID,
			AggregateType: t.Columns.AggregateType,
			AggregateID:   t.Columns.AggregateID,
			Type:          t.Columns.Type,
			Payload:       t.Columns.Payload,
		}
		for _, h := range t.Headers {
			ot.Headers = append(ot.Headers, h.Column)
		}
		pc.Outbox = append(pc.Outbox, ot)
	}
	var found []finding
	for _, f := range capture.Preflight(ctx, pc) {
		found = append(found, finding{f.Status.String(), f.Item, f.Text})
	}
	return found
}

func checkNATS(ctx context.Context, cfg config.Config) []finding {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	nc, err := natsconn.Dial(natsOptions(cfg.NATS, nil))
	if err != nil {
		return []finding{{"FAIL", "nats", err.Error()}}
	}
	defer nc.Close()
	found := []finding{{"ok", "nats", fmt.Sprintf("connected to %s (server %s, nats-server %s)", natsconn.ServerURL(nc), nc.ConnectedServerName(), nc.ConnectedServerVersion())}}
	sc := sinkConfig(cfg)
	for _, f := range sink.Preflight(ctx, nc, sc) {
		found = append(found, finding{f.Status.String(), f.Item, f.Text})
	}
	return found
}

// checkContinuity reports whether the slot continues where the stream
// ends (I7), as the relay would judge at its start. It reports nothing when
// the Postgres or NATS half already failed to connect.
func checkContinuity(ctx context.Context, cfg config.Config) []finding {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	facts, err := capture.ReadFacts(ctx, captureConfig(cfg))
	if err != nil {
		return nil
	}
	nc, err := natsconn.Dial(natsOptions(cfg.NATS, nil))
	if err != nil {
		return nil
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	end := continuity.End{Stream: cfg.NATS.Stream}
	if st, err := js.Stream(ctx, cfg.NATS.Stream); err == nil {
		if end, err = sink.ReadEnd(ctx, st); err != nil {
			return []finding{{"FAIL", "continuity", err.Error()}}
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return []finding{{"FAIL", "continuity", "read stream: " + err.Error()}}
	}
	if err := continuity.Judge(facts, end); err != nil {
		return []finding{{"FAIL", "continuity", err.Error()}}
	}
	switch {
	case end.Empty():
		return []finding{{"ok", "continuity", fmt.Sprintf("stream %q is empty: a first start, the relay streams from its slot", cfg.NATS.Stream)}}
	case !end.HasOrigin:
		return []finding{{"warn", "continuity", fmt.Sprintf("stream %q records no origin yet (a stream from before the continuity check): the relay records this database's at its next start, and can only check from then on", cfg.NATS.Stream)}}
	}
	return []finding{{"ok", "continuity", fmt.Sprintf("slot %q continues where stream %q ends (cluster %s, database %q)", cfg.Postgres.Slot, cfg.NATS.Stream, facts.SystemID, facts.Database)}}
}
