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
	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// decodeLimit reads n outbox events from slot with the relay's capture and
// decode, discarding them: the rate Postgres and decoding allow with no
// publishing at all. It returns events per second, and the CPU seconds the
// walsenders of pg (the postmaster's pid) spent meanwhile: a reader this
// fast keeps the walsender waking it, which costs the walsender more per
// event than feeding the relay (docs/performance.md, "How to read it").
func decodeLimit(pgURL string, pgPid int, slot string, n int) (rate, walsender float64, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := &confirmAll{}
	cp := capture.New(capture.Config{
		URL: pgURL, Slot: slot, Publication: "outboxrelay", Tables: []string{"public.outbox"},
		ReceiveBuffer: config.DefaultReceiveBuffer, // as the relay's
		Logger:        slog.New(slog.DiscardHandler),
	}, acked)
	errc := make(chan error, 1)
	go func() { errc <- cp.Run(ctx) }()
	defer func() { cancel(); <-errc }() // release the slot before the caller drops it
	dec := decode.NewDecoder(decode.Table{Schema: "public", Name: "outbox"})
	roots := map[int]string{pgPid: "postgres"}
	before := sampleCPU(roots)
	start := time.Now()
	for events := 0; events < n; {
		select {
		case err := <-errc:
			errc <- err
			return 0, 0, fmt.Errorf("capture stopped: %v", err)
		case <-time.After(time.Minute):
			return 0, 0, fmt.Errorf("decode limit: %d of %d events after a minute of silence", events, n)
		case m := <-cp.Messages():
			m.Release() // decoded at once, and nothing is kept
			if m.Kind == capture.Restart {
				dec.Reset()
			}
			if m.Kind != capture.Data {
				continue
			}
			res, err := dec.Decode(m.Data)
			if err != nil {
				return 0, 0, err
			}
			switch res.Kind {
			case decode.KindEvent:
				events++
			case decode.KindCommit:
				acked.set(res.EndLSN)
			}
		}
	}
	rate = float64(n) / time.Since(start).Seconds()
	// Sampled before the deferred cancel: a walsender that has exited is
	// no longer in /proc.
	return rate, cpuUse(before, sampleCPU(roots))["walsender"], nil
}

// recvlogicalLimit reads the backlog in slot with Postgres's own
// pg_recvlogical (pgoutput, same publication) to /dev/null, up to the current
// WAL position: how fast Postgres streams this backlog to a minimal C
// client, connected to url. It returns events per second.
func recvlogicalLimit(ctx context.Context, pg *testenv.Postgres, url, slot string, n int) (float64, error) {
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
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_recvlogical"), "-d", url, "--slot", slot, "--start",
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
// window and chained on Nats-Expected-Last-Sequence, with no Postgres. One
// message in every askEvery asks for its PubAck, and the last: 1 is an
// async JetStream publish, every message acknowledged; the relay's sink
// asks for one in every sink.AskEvery(window), which costs nats-server less
// per message. A PubAck's sequence settles every message
// before it, as in the sink. It reuses one message and header map, as the
// sink does, and formats only what changes: this is the rate JetStream
// itself allows. (It used to build all n messages before the clock started,
// but at 1M their 1.5 GB made its own garbage collector take the CPU
// nats-server needed.) It returns messages per second.
func publishLimit(natsURL, streamName string, n, askEvery int) (float64, error) {
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
	const window, aggregates = sink.DefaultWindow, 10000
	aggs, subjects := make([]string, aggregates), make([]string, aggregates)
	for i := range aggs {
		aggs[i] = "agg-" + strconv.Itoa(i)
		subjects[i] = "outbox.order." + aggs[i]
	}
	m := nats.NewMsg("")
	vals := map[string][]string{}
	for _, k := range []string{"Nats-Msg-Id", "Nats-Expected-Last-Sequence", "Outbox-Event-Id", "Outbox-Event-Type",
		"Outbox-Aggregate-Type", "Outbox-Aggregate-Id", "Outbox-Commit-LSN", "Outbox-Tx-Seq", "Outbox-Commit-Time"} {
		vals[k] = []string{""}
		m.Header[k] = vals[k]
	}
	vals["Outbox-Event-Type"][0], vals["Outbox-Aggregate-Type"][0], vals["Outbox-Tx-Seq"][0] = "OrderUpdated", "order", "1"
	vals["Outbox-Commit-Time"][0] = time.Now().UTC().Format(time.RFC3339Nano)
	pad := strings.Repeat("x", 200)
	var data, id []byte
	// next makes m message i (0-based).
	next := func(i int) {
		a := (i * 7919) % aggregates
		m.Subject, m.Reply = subjects[a], ""
		if i%askEvery == 0 || i == n-1 {
			m.Reply = inbox // one reply subject for all, as the relay's sink does
		}
		data = append(append(data[:0], `{"pad": "`...), pad...)
		data = strconv.AppendInt(append(data, `", "seq": `...), int64(i), 10)
		data = append(append(append(data, `, "status": "paid", "order_id": "`...), aggs[a]...), `"}`...)
		m.Data = data // nats.go copies it before PublishMsg returns
		id = fmt.Appendf(id[:0], "%08x-0000-4000-8000-%012x", i, i)
		vals["Nats-Msg-Id"][0] = string(id)
		vals["Outbox-Event-Id"][0] = vals["Nats-Msg-Id"][0]
		vals["Nats-Expected-Last-Sequence"][0] = strconv.Itoa(i)
		vals["Outbox-Aggregate-Id"][0] = aggs[a]
		vals["Outbox-Commit-LSN"][0] = pglogrepl.LSN(0x1500000 + i*400).String()
	}
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	stored, failed := 0, ""
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		var ack struct {
			Seq   int                           `json:"seq"`
			Error *struct{ Description string } `json:"error"`
		}
		_ = json.Unmarshal(m.Data, &ack)
		mu.Lock()
		if ack.Error != nil && failed == "" {
			failed = ack.Error.Description
		}
		stored = max(stored, ack.Seq) // the chain: everything before it is stored too
		cond.Broadcast()
		mu.Unlock()
	})
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)

	start := time.Now()
	for i := range n {
		mu.Lock()
		for i-stored >= window && failed == "" {
			cond.Wait()
		}
		mu.Unlock()
		next(i)
		if err := nc.PublishMsg(m); err != nil {
			return 0, err
		}
	}
	mu.Lock()
	for stored < n && failed == "" {
		cond.Wait()
	}
	mu.Unlock()
	if failed != "" {
		return 0, fmt.Errorf("publish limit: %s", failed)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
