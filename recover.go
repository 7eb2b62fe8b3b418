package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/natsconn"
	"github.com/outboxrelay/outboxrelay/recovery"
	"github.com/outboxrelay/outboxrelay/sink"
)

// recoverStream is outboxrelay recover: it creates the slot again and
// publishes the outbox rows the stream lacks (package recovery), then
// exits; outboxrelay run streams on from the new slot.
func recoverStream(ctx context.Context, cfg config.Config, acceptGap bool, chunk int, stdout io.Writer, log *slog.Logger) error {
	res, err := recoverFromTable(ctx, cfg, acceptGap, false, chunk, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recovered: %d rows in the outbox tables, %d already in stream %q, %d published; slot %q streams on from %s\n",
		res.Rows, res.InStream, cfg.NATS.Stream, res.Published, cfg.Postgres.Slot, res.Consistent)
	fmt.Fprintln(stdout, "events whose rows were deleted before this recovery cannot be recovered")
	if res.GapAccepted {
		fmt.Fprintln(stdout, "continued past an unrecoverable gap (-accept-gap): events committed after the stream's last one whose rows were already deleted are lost")
	}
	fmt.Fprintln(stdout, "start the relay (outboxrelay run) to stream on")
	return nil
}

// recoverFromTable runs a recovery, or with backfill a backfill, with a
// sink of its own that is drained before it returns.
func recoverFromTable(ctx context.Context, cfg config.Config, acceptGap, backfill bool, chunk int, log *slog.Logger) (recovery.Result, error) {
	nc, err := natsconn.Connect(natsOptions(cfg.NATS, log))
	if err != nil {
		return recovery.Result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return recovery.Result{}, err
	}
	sc := sinkConfig(cfg)
	sc.Logger = log
	var acks countAcks
	sk, err := sink.New(nc, sc, &acks)
	if err != nil {
		return recovery.Result{}, err
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	done := make(chan error, 1)
	go func() { done <- sk.Run(sctx) }()
	tables, _, _ := sources(cfg.Outbox)
	cc := captureConfig(cfg)
	cc.Logger = log
	res, err := recovery.Run(ctx, recovery.Config{
		Capture:    cc,
		Tables:     tables,
		JS:         js,
		Stream:     cfg.NATS.Stream,
		Sink:       sk,
		DeadLetter: sc.DeadLetterSubject != "",
		AcceptGap:  acceptGap,
		Backfill:   backfill,
		ChunkRows:  chunk,
		Logger:     log,
	})
	stop()
	<-done
	return res, err
}

type countAcks struct{ n atomic.Uint64 }

func (c *countAcks) Ack(pglogrepl.LSN) { c.n.Add(1) }
