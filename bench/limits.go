package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// decodeLimit reads n outbox events from slot with the relay's capture and
// decode, discarding them: the rate Postgres and decoding allow with no
// publishing at all. It returns events per second.
func decodeLimit(pgURL, slot string, n int) (float64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := &confirmAll{}
	cp := capture.New(capture.Config{
		URL: pgURL, Slot: slot, Publication: "outboxrelay", Tables: []string{"public.outbox"},
		Logger: slog.New(slog.DiscardHandler),
	}, acked)
	errc := make(chan error, 1)
	go func() { errc <- cp.Run(ctx) }()
	defer func() { cancel(); <-errc }() // release the slot before the caller drops it
	dec := decode.NewDecoder(decode.Table{Schema: "public", Name: "outbox"})
	start := time.Now()
	for events := 0; events < n; {
		select {
		case err := <-errc:
			errc <- err
			return 0, fmt.Errorf("capture stopped: %v", err)
		case <-time.After(time.Minute):
			return 0, fmt.Errorf("decode limit: %d of %d events after a minute of silence", events, n)
		case m := <-cp.Messages():
			if m.Kind == capture.Restart {
				dec.Reset()
			}
			if m.Kind != capture.Data {
				continue
			}
			res, err := dec.Decode(m.Data)
			if err != nil {
				return 0, err
			}
			switch res.Kind {
			case decode.KindEvent:
				events++
			case decode.KindCommit:
				acked.set(res.EndLSN)
			}
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// recvlogicalLimit reads the backlog in slot with Postgres's own
// pg_recvlogical (pgoutput, same publication) to /dev/null, up to the current
// WAL position: how fast Postgres streams this backlog to a minimal C
// client. It returns events per second.
func recvlogicalLimit(ctx context.Context, pg *testenv.Postgres, slot string, n int) (float64, error) {
	conn, err := pg.Connect(ctx)
	if err != nil {
		return 0, err
	}
	var end string
	err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end)
	conn.Close(ctx)
	if err != nil {
		return 0, err
	}
	bin, err := testenv.PostgresBinDir()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_recvlogical"), "-d", pgURL(pg), "--slot", slot, "--start",
		"-o", "proto_version=1", "-o", "publication_names=outboxrelay", "-E", end, "-f", "/dev/null", "--no-loop")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pg_recvlogical: %v: %s", err, out)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// confirmAll lets the capture confirm everything decoded.
type confirmAll struct {
	mu  sync.Mutex
	lsn pglogrepl.LSN
}

func (c *confirmAll) set(l pglogrepl.LSN) { c.mu.Lock(); c.lsn = l; c.mu.Unlock() }
func (c *confirmAll) Watermark() pglogrepl.LSN {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lsn
}

// publishLimit publishes n messages shaped like the relay's (same subjects,
// headers and ~300-byte payloads) to a fresh stream, pipelined with the same
// window and chained on Nats-Expected-Last-Sequence, with no Postgres. Every
// header and message is built before the clock starts: this is the rate
// JetStream itself allows. It returns messages per second.
func publishLimit(natsURL, streamName string, n int) (float64, error) {
	ctx := context.Background()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: []string{"outbox.>"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(ctx, streamName)

	inbox := nc.NewInbox()
	msgs := make([]*nats.Msg, n)
	pad := strings.Repeat("x", 200)
	for i := range msgs {
		agg := "agg-" + strconv.Itoa((i*7919)%10000)
		m := nats.NewMsg("outbox.order." + agg)
		m.Reply = inbox // one reply subject for all, as the relay's sink does
		m.Data = []byte(fmt.Sprintf(`{"pad": %q, "seq": %d, "status": "paid", "order_id": %q}`, pad, i, agg))
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		m.Header.Set("Nats-Msg-Id", id)
		m.Header.Set("Nats-Expected-Last-Sequence", strconv.Itoa(i))
		m.Header.Set("Outbox-Event-Id", id)
		m.Header.Set("Outbox-Event-Type", "OrderUpdated")
		m.Header.Set("Outbox-Aggregate-Type", "order")
		m.Header.Set("Outbox-Aggregate-Id", agg)
		m.Header.Set("Outbox-Commit-LSN", pglogrepl.LSN(0x1500000+i*400).String())
		m.Header.Set("Outbox-Tx-Seq", "1")
		m.Header.Set("Outbox-Commit-Time", time.Now().UTC().Format(time.RFC3339Nano))
		msgs[i] = m
	}
	const window = 4096
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	acked, failed := 0, ""
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		var ack struct {
			Error *struct{ Description string } `json:"error"`
		}
		_ = json.Unmarshal(m.Data, &ack)
		mu.Lock()
		if ack.Error != nil && failed == "" {
			failed = ack.Error.Description
		}
		acked++
		cond.Broadcast()
		mu.Unlock()
	})
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)

	start := time.Now()
	for i, m := range msgs {
		mu.Lock()
		for i-acked >= window && failed == "" {
			cond.Wait()
		}
		mu.Unlock()
		if err := nc.PublishMsg(m); err != nil {
			return 0, err
		}
	}
	mu.Lock()
	for acked < n && failed == "" {
		cond.Wait()
	}
	mu.Unlock()
	if failed != "" {
		return 0, fmt.Errorf("publish limit: %s", failed)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
