package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/config"
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
