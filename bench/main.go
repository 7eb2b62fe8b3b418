// Command bench measures outboxrelay against real Postgres and nats-server
// on this machine and prints a table. It never fails on timing: it reports.
//
// Backlog drain: N outbox events (~300-byte JSON payloads over 10k
// aggregates) are committed while the relay is stopped, then the relay
// binary is started and timed until the stream holds all N. Peak RSS is the
// relay's VmHWM.
//
// Unless -baseline=false, it then runs the polling publisher of package
// bench/polling on the same workloads, for comparison.
//
// Run it with `make bench` (it builds bin/outboxrelay first).
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/bench/polling"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

func main() {
	o, err := parseFlags(os.Args[1:])
	if err == nil {
		err = run(o)
	}
	if err == nil && o.baseline {
		err = polling.Baseline(o.pollingWorkload(), o.polling, o.sizes, o.txSizes, o.rates, o.latencyDur)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	rs, latDur := o.rates, o.latencyDur
	procs := o.relayProcs
	if procs == "" {
		procs = "1 (its default)"
	}
	fmt.Printf("machine: %d cores (%s), %s; Postgres, nats-server and the relay on the same machine; relay GOMAXPROCS %s\n", numCPU(), cpuModel(), memTotal(), procs)
	fmt.Printf("%s\n\n", relayBuild())
	if err := drains(o); err != nil {
		return err
	}
	if len(rs) == 0 {
		return nil
	}
	fmt.Printf("\nLive latency, commit -> stored (Outbox-Commit-Time vs JetStream timestamp), single-event transactions, %s per rate,\n", latDur)
	if o.pacedBy == "postgres" {
		fmt.Println("committed by a procedure inside Postgres (-paced-by client: from the bench over TCP instead).")
	} else {
		fmt.Println("committed by the bench over TCP from 8 connections (its own CPU is not counted below).")
	}
	fmt.Println("cpu: as for a drain, plus inserts = the inserting backends.")
	fmt.Println()
	fmt.Println("max = the worst event; each second = the worst event of each second of commits, so that")
	fmt.Println("spikes show rather than average away.")
	fmt.Println()
	fmt.Printf("%-10s %12s %10s %10s %10s %10s %14s\n", "target/s", "achieved/s", "p50", "p99", "p99.9", "max", "caught up in")
	lat, err := liveLatency(o)
	if err != nil {
		return err
	}
	for _, l := range lat {
		fmt.Printf("%-10d %12.0f %10s %10s %10s %10s %14s\n", l.rate, l.achieved, l.P50.Round(10*time.Microsecond), l.P99.Round(10*time.Microsecond), l.P999.Round(10*time.Microsecond), l.Max.Round(10*time.Microsecond), l.lagAfter.Round(10*time.Microsecond))
		fmt.Printf("    each second, ms: %s\n", formatMillis(l.PerSecond))
		fmt.Printf("    cpu: %s\n", l.cpu)
	}
	return nil
}

// formatMillis prints ds in milliseconds, to 0.1 ms.
func formatMillis(ds []time.Duration) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f", float64(d)/float64(time.Millisecond))
	}
	return b.String()
}

// startProfiles fetches CPU profiles (-cpuprofile) and execution traces
// (-trace), -cpuprofile-seconds long, of the relay and of nats-server, into
// PREFIX-name.pprof and PREFIX-name-nats.pprof, or .trace. The func it
// returns waits for them. Without either flag it does nothing.
func (e *benchEnv) startProfiles(name string) (wait func() error) {
	type fetch struct {
		port       int
		path, file string
	}
	var fetches []fetch
	for _, k := range []struct{ prefix, path, ext string }{
		{e.o.profile, "profile", "pprof"}, {e.o.trace, "trace", "trace"},
	} {
		if k.prefix != "" {
			fetches = append(fetches,
				fetch{e.port, k.path, fmt.Sprintf("%s-%s.%s", k.prefix, name, k.ext)},
				fetch{e.natsProfPort, k.path, fmt.Sprintf("%s-%s-nats.%s", k.prefix, name, k.ext)})
		}
	}
	done := make(chan error, len(fetches))
	for _, f := range fetches {
		go func() { done <- saveProfile(f.port, f.path, e.o.profileSecs, f.file) }()
	}
	return func() error {
		var errs []error
		for range fetches {
			errs = append(errs, <-done)
		}
		return errors.Join(errs...)
	}
}

// saveProfile fetches /debug/pprof/kind (profile or trace), secs long, from
// the pprof endpoint on port into file.
func saveProfile(port int, kind string, secs int, path string) error {
	var resp *http.Response
	err := testenv.Poll(10*time.Second, func() (bool, error) {
		var err error
		resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?seconds=%d", port, kind, secs))
		return err == nil, err
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s from port %d: %s", kind, port, resp.Status)
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

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// cpuModel is the processor's name as /proc/cpuinfo gives it: a VM can
// move to another kind of host, and its figures with it.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			if _, name, ok := strings.Cut(rest, ":"); ok {
				return strings.TrimSpace(name)
			}
		}
	}
	return "unknown processor"
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

// relayBuild says which build of the relay the bench runs, bin/outboxrelay
// as it is (go run ./bench does not rebuild it; make bench does), and
// whether it was built from the tree as it is now.
func relayBuild() string {
	out, err := exec.Command("bin/outboxrelay", "version").Output()
	if err != nil {
		return fmt.Sprintf("relay: bin/outboxrelay version: %v (run make build)", err)
	}
	built := strings.TrimSpace(strings.TrimPrefix(string(out), "outboxrelay "))
	tree, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return "relay: bin/outboxrelay " + built
	}
	if now := strings.TrimSpace(string(tree)); now != built {
		return fmt.Sprintf("relay: bin/outboxrelay %s, NOT the tree's %s: run make build, unless you copied in another build on purpose", built, now)
	}
	return fmt.Sprintf("relay: bin/outboxrelay %s, built from the tree as it is", built)
}
