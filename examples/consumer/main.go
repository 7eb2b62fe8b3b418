// Command consumer is an example consumer of outboxrelay's events. It reads
// the relay's stream through a durable JetStream pull consumer with explicit
// acks, handles events of different aggregates in parallel and the events
// of each aggregate in order (every aggregate belongs to one worker), and
// handles each event once, recognising repeats by Nats-Msg-Id.
//
//	make demo                                # in one terminal
//	go run ./examples/consumer -workers 4    # in another
//
// The logic is in Consumer (consumer.go) and Deduper (dedupe.go); this file
// only wires them to flags and prints each event.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	url := fs.String("server", envOr("NATS_URL", nats.DefaultURL), "NATS server URL ($NATS_URL)")
	stream := fs.String("stream", "OUTBOX", "the relay's stream")
	durable := fs.String("durable", "example", "durable consumer name")
	filter := fs.String("filter", "", `subject filter, e.g. "outbox.order.>" (default: the whole stream)`)
	workers := fs.Int("workers", 4, "events handled at once (per-aggregate order is kept)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, err := nats.Connect(*url, nats.Name("outboxrelay-example-consumer"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	c, err := New(Config{Stream: *stream, Durable: *durable, FilterSubject: *filter, Workers: *workers}, printEvent,
		NewMemoryDeduper(100_000))
	if err != nil {
		return err
	}
	slog.Info("consuming; Ctrl-C to stop", "server", nc.ConnectedAddr(), "stream", *stream, "durable", *durable, "workers", *workers)
	err = c.Run(ctx, js)
	s := c.Stats()
	slog.Info("stopped", "handled", s.Handled, "duplicates_skipped", s.Duplicates, "redelivered", s.Redelivered)
	return err
}

// printEvent stands in for real work: it takes a little time, so the
// parallelism shows, and prints the event.
func printEvent(ctx context.Context, ev Event) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(rand.IntN(50)) * time.Millisecond):
	}
	fmt.Printf("%-14s %s/%s  seq=%d  id=%s  %s\n", ev.Type, ev.AggregateType, ev.AggregateID, ev.StreamSeq, ev.ID, ev.Data)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
