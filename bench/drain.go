package main

// The backlog drains: each backlog written once, drained o.runs times by
// the limits and the relay, and printed as medians.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// result is one run of a drain: the relay's, and the limits measured just before it.
type result struct {
	secs            float64       // relay start to the last message stored
	first           time.Duration // relay start to the first message stored
	cpuSecs         float64       // the span cpu was sampled over: secs and the poll that saw the end
	rssKiB          int
	cpu             map[string]float64 // CPU seconds by role during the drain
	decode, publish float64            // limits measured in the same run
	decodeWalsender float64            // CPU seconds of the walsender feeding decode-only
	publishSink     float64            // publish, asking for PubAcks as the sink does
	recvlogical     float64            // Postgres's own client on the same backlog, for reference
	// startCPU is the relay's CPU seconds from its start to the first poll
	// that saw events stored, and startEvents how many it saw.
	startCPU    float64
	startEvents uint64
}

// drains prints the backlog-drain table: a drain of each size in ns, in
// transactions of each size in txs.
func drains(o *options) error {
	ns, txs := o.sizes, o.txSizes
	if len(ns) == 0 {
		return nil
	}
	fmt.Println("Backlog drain: relay start to last PubAck. Limits in the same run: decode = the relay's capture and")
	fmt.Println("decode with no publishing; pg_recvlogical = Postgres's own client reading the same backlog to /dev/null;")
	fmt.Println("publish = chained pipelined async JetStream publish with no Postgres, a PubAck for every message;")
	fmt.Println("publish* = the same asking for the PubAck of one message in 256 (and the last), as the relay's sink does.")
	fmt.Println("/limit = relay / min(max(decode, pg_recvlogical), publish), issue 21's measure (target >= 0.90);")
	fmt.Println("/limit* = the same with publish*, how near the relay gets to what its own protocol allows.")
	fmt.Println("first = from starting the relay binary to its first event stored (connecting, checks, resume).")
	fmt.Println("cpu = CPU time per event of each process during the relay's drain; steal = the share of the")
	fmt.Println("machine's CPU time a hypervisor gave to other guests (above a few percent, the figures are low).")
	fmt.Println("relay once started = the relay's CPU time per event after the first poll (every 50ms) that saw events stored.")
	fmt.Println("cpu feeding decode-only = the walsender's CPU time per event while decode-only read the backlog.")
	fmt.Println()
	if o.runs > 1 {
		fmt.Printf("Each backlog is drained %d times, the limits and then the relay in turn, each through a slot of its own\n", o.runs)
		fmt.Println("made before the backlog was written. Each figure is the median of the runs (/limit: of each run's own")
		fmt.Println("/limit), peak RSS the largest; runs = every run's relay rate, /limit and relay CPU, in order.")
	}
	fmt.Println()
	fmt.Printf("%-9s %9s %10s %10s %14s %10s %10s %7s %7s %8s %10s\n", "events/tx", "events", "relay ev/s", "decode", "pg_recvlogical", "publish", "publish*", "/limit", "/limit*", "first", "peak RSS")
	for _, n := range ns {
		for _, tx := range txs {
			rs, err := drain(o, n, tx)
			if err != nil {
				return err
			}
			printDrain(o, n, tx, rs)
		}
	}
	return nil
}

// printDrain prints the row of one backlog's runs, and its cpu lines.
func printDrain(o *options, n, tx int, rs []result) {
	med := func(f func(result) float64) float64 { return median(rs, f) }
	rate := func(r result) float64 { return float64(n) / r.secs }
	ofLimit := func(r result) float64 { return rate(r) / min(max(r.decode, r.recvlogical), r.publish) }
	ofLimitSink := func(r result) float64 { return rate(r) / min(max(r.decode, r.recvlogical), r.publishSink) }
	relayCPU := func(r result) float64 { return r.cpu["relay"] / float64(n) * 1e6 }
	limit, limitSink := med(ofLimit), med(ofLimitSink)
	if !o.limits {
		limit, limitSink = 0, 0 // not measured
	}
	peak := 0
	for _, r := range rs {
		peak = max(peak, r.rssKiB)
	}
	first := time.Duration(med(func(r result) float64 { return float64(r.first) }))
	fmt.Printf("%-9d %9d %10.0f %10.0f %14.0f %10.0f %10.0f %7.2f %7.2f %8s %6.1f MiB\n", tx, n, med(rate),
		med(func(r result) float64 { return r.decode }), med(func(r result) float64 { return r.recvlogical }),
		med(func(r result) float64 { return r.publish }), med(func(r result) float64 { return r.publishSink }),
		limit, limitSink, first.Round(time.Millisecond), float64(peak)/1024)
	if len(rs) > 1 {
		line := "    runs: relay " + each(rs, rate, "%.0f") + " events/s"
		if o.limits {
			line += "; /limit " + each(rs, ofLimit, "%.2f")
		}
		fmt.Println(line + "; relay cpu " + each(rs, relayCPU, "%.2f") + " µs/event")
	}
	cpu := map[string]float64{}
	for role := range rs[0].cpu {
		cpu[role] = med(func(r result) float64 { return r.cpu[role] })
	}
	fmt.Printf("    cpu: %s\n", formatCPU(cpu, n, med(func(r result) float64 { return r.cpuSecs })))
	var started []result // the runs whose start was seen apart from the drain
	for _, r := range rs {
		if r.startEvents > 0 && r.startEvents < uint64(n) {
			started = append(started, r)
		}
	}
	if len(started) > 0 {
		fmt.Printf("    relay once started: %.2f µs/event (its first %.0f ms of CPU, to the first events stored, left out)\n",
			median(started, func(r result) float64 { return (r.cpu["relay"] - r.startCPU) / float64(uint64(n)-r.startEvents) * 1e6 }),
			median(started, func(r result) float64 { return r.startCPU * 1000 }))
	}
	if o.limits {
		fmt.Printf("    cpu feeding decode-only: walsender %.1f µs/event\n", med(func(r result) float64 { return r.decodeWalsender })/float64(n)*1e6)
	}
}

// median is the median of f over rs (of the middle two, their mean).
func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// each is f of every run, in order, formatted with format.
func each(rs []result, f func(result) float64, format string) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf(format, f(r))
	}
	return strings.Join(parts, " ")
}

// drain writes a backlog of n events in transactions of txSize, and drains
// it o.runs times. Every run's readers (the relay, decode-only and
// pg_recvlogical) have slots of their own, all made before the backlog, so
// each reads all of it.
func drain(o *options, n, txSize int) ([]result, error) {
	ctx := context.Background()
	e, err := newBenchEnv(o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	var slots []string
	for k := range o.runs {
		if k > 0 {
			slots = append(slots, relaySlot(k))
		}
		if o.limits {
			slots = append(slots, limitSlot("decode", k), limitSlot("recvlogical", k))
		}
	}
	if err := e.createSlots(ctx, slots...); err != nil {
		return nil, err
	}
	if err := writeBacklog(ctx, e.pg, n, txSize); err != nil {
		return nil, err
	}
	var rs []result
	for k := range o.runs {
		res, err := drainOnce(o, e, n, txSize, k)
		if err != nil {
			return nil, fmt.Errorf("drain %d of %d of %d events, %d per transaction: %w", k+1, o.runs, n, txSize, err)
		}
		rs = append(rs, res)
	}
	return rs, nil
}

// limitSlot is the slot a limit's reader uses in run k.
func limitSlot(reader string, k int) string { return fmt.Sprintf("bench_%s_%d", reader, k) }

// drainOnce is run k of a drain: the limits, then the relay on its own slot
// into a new stream.
func drainOnce(o *options, e *benchEnv, n, txSize, k int) (result, error) {
	ctx := context.Background()
	var res result
	var err error
	if o.limits {
		if res.decode, res.decodeWalsender, err = decodeLimit(e.pgURL(), e.pg.Pid(), limitSlot("decode", k), n); err != nil {
			return result{}, err
		}
		if res.recvlogical, err = recvlogicalLimit(ctx, e.pg, e.pgURL(), limitSlot("recvlogical", k), n); err != nil {
			return result{}, err
		}
		for _, slot := range []string{limitSlot("decode", k), limitSlot("recvlogical", k)} {
			if err := e.pg.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
				return result{}, err
			}
		}
	}
	if k > 0 {
		// The run before's relay made the stream, and stored every event in it.
		if err := e.js.DeleteStream(ctx, "OUTBOX"); err != nil {
			return result{}, fmt.Errorf("delete the run before's stream: %w", err)
		}
	}
	if o.limits {
		if res.publish, err = publishLimit(e.ns.URL(), "OUTBOX", n, 1); err != nil {
			return result{}, err
		}
		if res.publishSink, err = publishLimit(e.ns.URL(), "OUTBOX", n, sink.AskEvery(sink.DefaultWindow)); err != nil {
			return result{}, err
		}
	}

	roots := map[int]string{e.pg.Pid(): "postgres", e.ns.Pid(): "nats-server"}
	before := sampleCPU(roots)
	start := time.Now()
	relay, err := e.startRelayOn(relaySlot(k))
	if err != nil {
		return result{}, err
	}
	defer stopRelay(relay)
	roots[relay.Pid()] = "relay"
	profiled := func() error { return nil }
	if k == 0 {
		profiled = e.startProfiles(fmt.Sprintf("%d-%d", n, txSize))
	}
	first, last, err := e.waitStream(relay, uint64(n), 10*time.Minute, func(stored uint64) {
		if ns, ok := procCPUNanos(relay.Pid()); ok {
			res.startCPU, res.startEvents = float64(ns)/1e9, stored
		}
	})
	if err != nil {
		return result{}, err
	}
	res.secs, res.first = last.Sub(start).Seconds(), first.Sub(start)
	res.cpu, res.cpuSecs = cpuUse(before, sampleCPU(roots)), time.Since(start).Seconds()
	if err := profiled(); err != nil {
		return result{}, err
	}
	res.rssKiB = peakRSS(relay.Pid())
	return res, nil
}

// writeBacklog commits n events in transactions of txSize from four
// connections; each transaction is one INSERT ... SELECT.
func writeBacklog(ctx context.Context, pg *testenv.Postgres, n, txSize int) error {
	pad := strings.Repeat("x", 200)
	const writers = 4
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			conn, err := pg.Connect(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for first := w * txSize; first < n; first += writers * txSize {
				last := min(first+txSize, n)
				_, err := conn.Exec(ctx, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
					SELECT 'order', 'agg-' || ((g::bigint * 7919) % 10000), 'OrderUpdated',
					       jsonb_build_object('order_id', 'agg-' || ((g::bigint * 7919) % 10000), 'seq', g, 'status', 'paid', 'pad', $1::text)
					FROM generate_series($2::int, $3::int) AS g`, pad, first+1, last)
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// peakRSS returns the process's VmHWM in KiB.
func peakRSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb
		}
	}
	return 0
}
