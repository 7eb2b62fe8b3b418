package sink_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/procstat"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// BenchmarkPublish drives the sink's whole send path (Publish, the chained
// sends with their headers, the PubAcks) against a real nats-server, with
// events shaped like make bench's: ~300-byte JSON payloads over 10k
// aggregates, 100 per transaction. Wall time is shared with nats-server on
// the same cores, so it also reports CPU time per event: cpu-ns/event is
// this process's (the sink's side, what the relay pays), nats-ns/event
// nats-server's. Run it with -cpu 1, as the relay runs (GOMAXPROCS=1), and
// -cpuprofile to see where the sink's time goes:
//
//	NATS_SERVER_BIN=$PWD/bin/nats-server go test -run '^$' -bench Publish -cpu 1 -benchtime 200000x -count 10 ./sink/
func BenchmarkPublish(b *testing.B) {
	ns := testenv.StartNATS(b)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	// Each run of b.N events has a nats-server of its own, so the chain
	// starts empty and the duplicate window holds only its own ids.
	evs := benchEvents(b.N)
	a := newAcker()
	s, err := sink.New(nc, sink.Config{Stream: "BENCH", Subject: "bench.{aggregate_type}.{aggregate_id}", Logger: slog.New(slog.DiscardHandler)}, a)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	natsBefore, err := procstat.CPUNanos(ns.Pid())
	if err != nil {
		b.Fatal(err)
	}
	cpuBefore := cpuTime()
	b.ResetTimer()
	for _, ev := range evs {
		if err := s.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Drain(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := cpuTime() - cpuBefore
	natsAfter, err := procstat.CPUNanos(ns.Pid())
	if err != nil {
		b.Fatal(err)
	}
	if got := a.Total(); got != b.N {
		b.Fatalf("acked %d events, want %d", got, b.N)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
	b.ReportMetric(float64(natsAfter-natsBefore)/float64(b.N), "nats-ns/event")
}

// benchEvents returns n events like make bench's backlog: 100 per
// transaction, over 10k aggregates, each with a ~300-byte JSON payload.
func benchEvents(n int) []*decode.Event {
	// Built without fmt, to keep the profile for the sink.
	pad := strings.Repeat("x", 200)
	start := time.Now()
	evs := make([]*decode.Event, n)
	for i := range evs {
		tx := i / 100
		agg := "agg-" + strconv.Itoa((i*7919)%10000)
		evs[i] = &decode.Event{
			ID:            strconv.Itoa(10_000_000+i) + "-5717-4562-b3fc-2c963f66afa6",
			AggregateType: "order",
			AggregateID:   agg,
			Type:          "OrderUpdated",
			Payload:       []byte(`{"order_id": "` + agg + `", "seq": ` + strconv.Itoa(i) + `, "status": "paid", "pad": "` + pad + `"}`),
			CommitLSN:     pglogrepl.LSN(0x1_0000_0000 + tx*0x10000),
			TxSeq:         uint32(i%100 + 1),
			CommitTime:    start.Add(time.Duration(tx) * time.Millisecond),
			Xid:           uint32(1000 + tx),
			Table:         "public.outbox",
		}
	}
	return evs
}

// cpuTime is this process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
