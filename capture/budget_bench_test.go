package capture

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkBudget is the cost per message of the capture's byte budget:
// take before emitting, Release once the pipeline is done with it. The
// pipe cases hand each message to another goroutine over a channel the size
// of the capture's, as the capture does to the pipeline, without the
// budget and with it, so that the difference is the budget's own cost.
// Run it as the relay runs, with one P:
//
//	go test -run '^$' -bench Budget -cpu 1 -count 10 ./capture/
func BenchmarkBudget(b *testing.B) {
	data := make([]byte, 300)
	b.Run("take+release", func(b *testing.B) {
		defer reportCPU(b)()
		bud := newBudget(DefaultBufferBytes)
		for b.Loop() {
			if !bud.take(len(data)) {
				b.Fatal("budget full")
			}
			Message{Kind: Data, Data: data, budget: bud}.Release()
		}
	})
	for _, withBudget := range []bool{false, true} {
		name := "pipe/none"
		if withBudget {
			name = "pipe/budget"
		}
		b.Run(name, func(b *testing.B) {
			defer reportCPU(b)()
			var bud *budget
			if withBudget {
				bud = newBudget(DefaultBufferBytes)
			}
			ch := make(chan Message, 4096)
			done := make(chan struct{})
			go func() {
				for m := range ch {
					m.Release()
				}
				close(done)
			}()
			for b.Loop() {
				m := Message{Kind: Data, Data: data}
				if bud != nil {
					m.budget = bud
					for !bud.take(len(data)) {
						<-bud.freed // never full here: the channel fills first
					}
				}
				ch <- m
			}
			close(ch)
			<-done
		})
	}
}

// reportCPU reports the process's CPU time per op (cpu-ns/op) when the
// func it returns is called: on a machine shared with other work, wall
// time per op also counts the time others ran.
func reportCPU(b *testing.B) func() {
	before := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
