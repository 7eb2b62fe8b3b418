package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/bench/polling"
)

// options is the bench's command line, parsed once in main.
type options struct {
	sizes       []int         // backlog sizes; none: no drains
	txSizes     []int         // events per transaction of each backlog
	rates       []int         // paced rates of the latency runs; none: skip them
	latencyDur  time.Duration // how long each paced rate runs
	profile     string        // file prefix for CPU profiles; empty: none
	trace       string        // file prefix for execution traces; empty: none
	profileSecs int           // how long each profile and trace is
	relayProcs  string        // GOMAXPROCS for the relay; empty leaves its default
	limits      bool          // measure the limits beside each drain
	runs        int           // drains of each backlog, relay and limits; the table prints medians
	// pgSocket makes the relay and the limits reach Postgres over its Unix
	// socket, as a relay beside the database can; the default is TCP, as
	// from a container.
	pgSocket   bool
	pacedBy    string // who commits the paced inserts: postgres or client
	latencyCSV string // file prefix for each paced run's per-event latencies; empty: none
	baseline   bool   // also run the polling baseline
	polling    polling.Config
}

// parseFlags parses the command line; like the flag package's own, it exits
// on -h and on a malformed flag.
func parseFlags(args []string) (*options, error) {
	o := &options{pacedBy: "postgres", polling: polling.DefaultConfig(), runs: 3}
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	sizes := fs.String("n", "100000,1000000", "comma-separated backlog sizes (empty: no drains)")
	txSizes := fs.String("tx", "100,1", "comma-separated events per transaction")
	rates := fs.String("rates", "1000,2500,5000,10000", "comma-separated paced rates for the latency runs (empty: skip)")
	fs.DurationVar(&o.latencyDur, "latency-duration", 10*time.Second, "how long each paced rate runs")
	fs.StringVar(&o.profile, "cpuprofile", "", "write CPU profiles of the relay and of nats-server (the start of each drain and of each paced rate) to PREFIX-*.pprof and PREFIX-*-nats.pprof")
	fs.StringVar(&o.trace, "trace", "", "write execution traces (go tool trace) of the relay and of nats-server (the start of each drain and of each paced rate) to PREFIX-*.trace and PREFIX-*-nats.trace")
	fs.IntVar(&o.profileSecs, "cpuprofile-seconds", 3, "how long each -cpuprofile profile and -trace trace is")
	fs.StringVar(&o.relayProcs, "relay-gomaxprocs", "", "GOMAXPROCS for the relay (empty: the relay's default, 1)")
	fs.BoolVar(&o.limits, "limits", true, "also measure the decode-only, publish-only and pg_recvlogical limits of each backlog (false: only the relay's drain, for quick A/B runs)")
	fs.Func("runs", "drain each backlog this many times, the limits and the relay in turn, each through a replication slot of its own made before the backlog; the table prints each figure's median, and every run's relay rate, /limit and relay CPU beside it (default 3)", positive(&o.runs, strconv.Atoi))
	fs.BoolVar(&o.pgSocket, "pg-socket", false, "connect the relay and the limits to Postgres over its Unix socket instead of TCP")
	fs.Func("paced-by", "who commits the latency runs' paced inserts: postgres (a procedure, the default) or client (this process, over 8 connections)", func(v string) error {
		if v != "postgres" && v != "client" {
			return errors.New("want postgres or client")
		}
		o.pacedBy = v
		return nil
	})
	fs.StringVar(&o.latencyCSV, "latency-csv", "", "write each paced run's per-event commit time and latency to PREFIX-relay-RATE.csv (and -polling-)")
	fs.BoolVar(&o.baseline, "baseline", true, "also run the polling-publisher baseline (bench/polling) on the same workloads")
	// Checked as the flags are parsed, so that a bad value stops the bench
	// before the relay's runs.
	fs.Func("poll-batch", "polling baseline: rows per poll, the SELECT's LIMIT (default 1000)", positive(&o.polling.Batch, strconv.Atoi))
	fs.Func("poll-interval", "polling baseline: sleep after a poll that finds no rows (default 100ms)", positive(&o.polling.Interval, time.ParseDuration))
	fs.Func("poll-workers", "polling baseline: workers for one extra multi-worker drain row; 1: no such row (default 4)", positive(&o.polling.Workers, strconv.Atoi))
	fs.Parse(args) // ExitOnError: it never returns an error
	var err error
	if o.sizes, err = ints("-n", *sizes); err != nil {
		return nil, err
	}
	if o.txSizes, err = ints("-tx", *txSizes); err != nil {
		return nil, err
	}
	if o.rates, err = ints("-rates", *rates); err != nil {
		return nil, err
	}
	return o, nil
}

func positive[T int | time.Duration](dst *T, parse func(string) (T, error)) func(string) error {
	return func(s string) error {
		v, err := parse(s)
		if err == nil && v <= 0 {
			err = errors.New("must be above 0")
		}
		if err == nil {
			*dst = v
		}
		return err
	}
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

// csvPath is where a paced run of who at rate writes its latencies, or ""
// without -latency-csv.
func (o *options) csvPath(who string, rate int) string {
	if o.latencyCSV == "" {
		return ""
	}
	return fmt.Sprintf("%s-%s-%d.csv", o.latencyCSV, who, rate)
}
