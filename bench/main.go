// Command bench measures outboxrelay against real Postgres and nats-server
// on this machine and prints a table. It never fails on timing: it reports.
//
// Backlog drain: N outbox events (~300-byte JSON payloads over 10k
// aggregates) are committed while the relay is stopped, then the relay
// binary is started and timed until the stream holds all N. Peak RSS is the
// relay's VmHWM.
//
// Run it with `make bench` (it builds bin/outboxrelay first).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

func main() {
	sizes := flag.String("n", "100000,1000000", "comma-separated backlog sizes (empty: no drains)")
	txSizes := flag.String("tx", "100,1", "comma-separated events per transaction")
	rates := flag.String("rates", "1000,5000,10000", "comma-separated paced rates for the latency runs (empty: skip)")
	latDur := flag.Duration("latency-duration", 10*time.Second, "how long each paced rate runs")
	flag.StringVar(&profile, "cpuprofile", "", "write CPU profiles of the relay and of nats-server (the start of each drain and of each paced rate) to PREFIX-*.pprof and PREFIX-*-nats.pprof")
	flag.IntVar(&profileSecs, "cpuprofile-seconds", 3, "how long each -cpuprofile profile is")
	flag.StringVar(&relayProcs, "relay-gomaxprocs", "", "GOMAXPROCS for the relay (empty: the relay's default, 1)")
	flag.BoolVar(&withLimits, "limits", true, "also measure the decode-only, publish-only and pg_recvlogical limits of each backlog (false: only the relay's drain, for quick A/B runs)")
	flag.BoolVar(&pgSocket, "pg-socket", false, "connect the relay and the limits to Postgres over its Unix socket instead of TCP")
	flag.Func("paced-by", "who commits the latency runs' paced inserts: postgres (a procedure, the default) or client (this process, over 8 connections)", func(v string) error {
		if v != "postgres" && v != "client" {
			return errors.New("want postgres or client")
		}
		pacedBy = v
		return nil
	})
	flag.StringVar(&latencyCSV, "latency-csv", "", "write each paced run's per-event commit time and latency to PREFIX-relay-RATE.csv (and -polling-)")
	baseline := flag.Bool("baseline", true, "also run the polling-publisher baseline (bench/polling.go) on the same workloads")
	flag.Parse()
	ns, err := ints("-n", *sizes)
	var txs, rs []int
	if err == nil {
		txs, err = ints("-tx", *txSizes)
	}
	if err == nil {
		rs, err = ints("-rates", *rates)
	}
	if err == nil {
		err = run(ns, txs, rs, *latDur)
	}
	if err == nil && *baseline {
		err = pollingBaseline(ns, txs, rs, *latDur)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	profile     string
	profileSecs int
)

var relayProcs string // GOMAXPROCS for the relay; empty leaves its default

var withLimits = true // measure the limits beside each drain

// pgSocket makes the relay and the limits reach Postgres over its Unix
// socket, as a relay beside the database can; the default is TCP, as from a
// container.
var pgSocket bool

// pgURL is the URL the relay and the limits use for pg.
func pgURL(pg *testenv.Postgres) string {
	if pgSocket {
		return pg.SocketURL()
	}
	return pg.URL()
}

func run(ns, txs, rs []int, latDur time.Duration) error {
	procs := relayProcs
	if procs == "" {
		procs = "1 (its default)"
	}
	fmt.Printf("machine: %d cores, %s; Postgres, nats-server and the relay on the same machine; relay GOMAXPROCS %s\n\n", numCPU(), memTotal(), procs)
	if err := drains(ns, txs); err != nil {
		return err
	}
	if len(rs) == 0 {
		return nil
	}
	fmt.Printf("\nLive latency, commit -> stored (Outbox-Commit-Time vs JetStream timestamp), single-event transactions, %s per rate,\n", latDur)
	if pacedBy == "postgres" {
		fmt.Println("committed by a procedure inside Postgres (-paced-by client: from the bench over TCP instead).")
	} else {
		fmt.Println("committed by the bench over TCP from 8 connections (its own CPU is not counted below).")
	}
	fmt.Println("cpu: as for a drain, plus inserts = the inserting backends.")
	fmt.Println()
	fmt.Printf("%-10s %12s %10s %10s %10s %14s\n", "target/s", "achieved/s", "p50", "p99", "p99.9", "caught up in")
	lat, err := liveLatency(rs, latDur)
	if err != nil {
		return err
	}
	for _, l := range lat {
		fmt.Printf("%-10d %12.0f %10s %10s %10s %14s\n", l.rate, l.achieved, l.p50.Round(10*time.Microsecond), l.p99.Round(10*time.Microsecond), l.p999.Round(10*time.Microsecond), l.lagAfter.Round(10*time.Microsecond))
		fmt.Printf("    cpu: %s\n", l.cpu)
	}
	return nil
}

// ints parses a comma-separated list of positive integers; empty is none.
func ints(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%s %q: want comma-separated positive integers, like 100000,1000000", flagName, s)
		}
		out = append(out, v)
	}
	return out, nil
}

type result struct {
	secs            float64 // relay start to the last message stored
	cpuSecs         float64 // the span cpu was sampled over: secs and the poll that saw the end
	rssKiB          int
	cpu             map[string]float64 // CPU seconds by role during the drain
	decode, publish float64            // limits measured in the same run
	decodeWalsender float64            // CPU seconds of the walsender feeding decode-only
	publishSink     float64            // publish, asking for PubAcks as the sink does
	recvlogical     float64            // Postgres's own client on the same backlog, for reference
}

// drains prints the backlog-drain table: a drain of each size in ns, in
// transactions of each size in txs.
func drains(ns, txs []int) error {
	if len(ns) == 0 {
		return nil
	}
	fmt.Println("Backlog drain: relay start to last PubAck. Limits in the same run: decode = capture+decode")
	fmt.Println("with no publishing; publish = chained pipelined async JetStream publish with no Postgres, a PubAck")
	fmt.Println("for every message; publish* = the same asking for the PubAck of one message in 256 (and the last), as")
	fmt.Println("the relay's sink does. ratio = relay / min(decode, publish*), how near the relay gets to what its own")
	fmt.Println("protocol allows; /publish = relay / publish, the target's own measure (>= 0.75).")
	fmt.Println("pg_recvlogical = Postgres's own client reading the same backlog to /dev/null, for reference.")
	fmt.Println("cpu = CPU time per event of each process during the relay's drain; steal = the share of the")
	fmt.Println("machine's CPU time a hypervisor gave to other guests (above a few percent, the figures are low).")
	fmt.Println("cpu feeding decode-only = the walsender's CPU time per event while decode-only read the backlog.")
	fmt.Println()
	fmt.Printf("%-12s %9s %12s %12s %12s %13s %7s %8s %10s %15s\n", "events/tx", "events", "relay ev/s", "decode ev/s", "publish m/s", "publish* m/s", "ratio", "/publish", "peak RSS", "pg_recvlogical")
	for _, n := range ns {
		for _, tx := range txs {
			res, err := drain(n, tx)
			if err != nil {
				return err
			}
			rate := float64(n) / res.secs
			ratio, ofPublish := rate/min(res.decode, res.publishSink), rate/res.publish
			if !withLimits {
				ratio, ofPublish = 0, 0 // not measured
			}
			fmt.Printf("%-12d %9d %12.0f %12.0f %12.0f %13.0f %7.2f %8.2f %6.1f MiB %15.0f\n", tx, n, rate, res.decode, res.publish, res.publishSink, ratio, ofPublish, float64(res.rssKiB)/1024, res.recvlogical)
			fmt.Printf("    cpu: %s\n", formatCPU(res.cpu, n, res.cpuSecs))
			if withLimits {
				fmt.Printf("    cpu feeding decode-only: walsender %.1f µs/event\n", res.decodeWalsender/float64(n)*1e6)
			}
		}
	}
	return nil
}

func drain(n, txSize int) (result, error) {
	ctx := context.Background()
	e, err := newBenchEnv()
	if err != nil {
		return result{}, err
	}
	defer e.close()
	if err := e.createSlots(ctx, "bench_decode", "bench_recvlogical"); err != nil {
		return result{}, err
	}
	if err := writeBacklog(ctx, e.pg, n, txSize); err != nil {
		return result{}, err
	}
	var res result
	if withLimits {
		if res.decode, res.decodeWalsender, err = decodeLimit(pgURL(e.pg), e.pg.Pid(), "bench_decode", n); err != nil {
			return result{}, err
		}
		if res.recvlogical, err = recvlogicalLimit(ctx, e.pg, "bench_recvlogical", n); err != nil {
			return result{}, err
		}
	}
	for _, slot := range []string{"bench_decode", "bench_recvlogical"} {
		if err := e.pg.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
			return result{}, err
		}
	}
	if withLimits {
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
	relay, err := e.startRelay()
	if err != nil {
		return result{}, err
	}
	defer stopRelay(relay)
	roots[relay.Pid()] = "relay"
	profiled := e.startProfiles(fmt.Sprintf("%d-%d", n, txSize))
	last, err := e.waitStream(relay, uint64(n), 10*time.Minute)
	if err != nil {
		return result{}, err
	}
	res.secs = last.Sub(start).Seconds()
	res.cpu, res.cpuSecs = cpuUse(before, sampleCPU(roots)), time.Since(start).Seconds()
	if err := profiled(); err != nil {
		return result{}, err
	}
	res.rssKiB = peakRSS(relay.Pid())
	return res, nil
}

// startProfiles fetches CPU profiles, -cpuprofile-seconds long, of the relay
// and of nats-server into PREFIX-name.pprof and PREFIX-name-nats.pprof. The
// func it returns waits for both. Without -cpuprofile it does nothing.
func (e *benchEnv) startProfiles(name string) (wait func() error) {
	if profile == "" {
		return func() error { return nil }
	}
	done := make(chan error, 2)
	go func() { done <- saveProfile(e.port, fmt.Sprintf("%s-%s.pprof", profile, name)) }()
	go func() { done <- saveProfile(e.natsProfPort, fmt.Sprintf("%s-%s-nats.pprof", profile, name)) }()
	return func() error { return errors.Join(<-done, <-done) }
}

// saveProfile fetches a CPU profile from the pprof endpoint on port.
func saveProfile(port int, path string) error {
	var resp *http.Response
	err := testenv.Poll(10*time.Second, func() (bool, error) {
		var err error
		resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, profileSecs))
		return err == nil, err
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile from port %d: %s", port, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return "unknown RAM"
}
