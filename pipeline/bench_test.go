package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/pgoutputtest"
	"github.com/outboxrelay/outboxrelay/pipeline"
)

// nopTracker and countingPublisher cost next to nothing, so that
// BenchmarkPipeline measures the pipeline's own work.
type nopTracker struct{}

func (nopTracker) Begin(pglogrepl.LSN) (bool, error)      { return true, nil }
func (nopTracker) Add(pglogrepl.LSN)                      {}
func (nopTracker) Commit(commit, end pglogrepl.LSN) error { return nil }
func (nopTracker) Mark(pglogrepl.LSN)                     {}

// countingPublisher closes done at the want-th event. Only the pipeline's
// goroutine calls Publish.
type countingPublisher struct {
	n, want int
	done    chan struct{}
}

func (p *countingPublisher) Publish(_ context.Context, ev *decode.Event) error {
	if ev.Invalid != "" {
		return fmt.Errorf("invalid event: %s", ev.Invalid)
	}
	if p.n++; p.n == p.want {
		close(p.done)
	}
	return nil
}

func (p *countingPublisher) Halted() error { return nil }

// BenchmarkPipeline runs the relay's loop between capture and sink on one
// P, as the relay does (run it with -cpu 1): a goroutine sends the
// capture's messages, transactions of 100 inserts (tx=100) or of one
// (tx=1) with a ~300-byte JSON payload, over a channel the size of the
// capture's, and the pipeline decodes them and hands each event over. It
// measures the handoff, the decoding and the event's allocation, per event.
func BenchmarkPipeline(b *testing.B) {
	for _, n := range []int{100, 1} {
		b.Run(fmt.Sprintf("tx=%d", n), func(b *testing.B) { benchmarkPipeline(b, n) })
	}
}

func benchmarkPipeline(b *testing.B, perTx int) {
	payload := `{"orderId":"7f9c2a1e-4b3d-4e8f-9a6b-2c1d0e9f8a7b","customerId":"c-102934",` +
		`"lines":[{"sku":"SKU-0001","qty":2,"price":"19.99"},{"sku":"SKU-0417","qty":1,"price":"249.00"}],` +
		`"currency":"EUR","total":"288.98","shipping":{"method":"express","country":"DE"}}`
	payload += strings.Repeat(" ", max(0, 300-len(payload)))
	tx := stream{}.data(pgoutputtest.Begin(0x100, t0, 1))
	for i := range perTx {
		tx = tx.data(pgoutputtest.Insert(relid, pgoutputtest.Text(fmt.Sprintf("5d2c1f0e-7a4b-4c1e-9f3a-0b1c2d3e%04d", i)),
			pgoutputtest.Text("order"), pgoutputtest.Text(fmt.Sprintf("7f9c2a1e-4b3d-4e8f-9a6b-2c1d0e9f%04d", i)),
			pgoutputtest.Text("OrderCreated"), pgoutputtest.Text(payload)))
	}
	tx = tx.data(pgoutputtest.Commit(0x100, 0x108, t0))

	pub := &countingPublisher{want: b.N, done: make(chan struct{})}
	p := pipeline.New(pipeline.Config{Tables: []decode.Table{outbox}}, pub, nopTracker{})
	ch := make(chan capture.Message, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx, ch) }()
	go func() {
		for _, m := range (stream{}).restart().relation() {
			ch <- m
		}
		for {
			for _, m := range tx {
				select { // as the capture's emit does: a send, then a wait
				case ch <- m:
					continue
				default:
				}
				select {
				case ch <- m:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	<-pub.done
	b.StopTimer()
	cancel()
	if err := <-ran; err != nil {
		b.Fatal(err)
	}
	if h := p.Halted(); h != nil {
		b.Fatal(h)
	}
}
