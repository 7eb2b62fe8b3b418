// Package polling is the bench's baseline: the polling publisher teams write
// by hand instead of a CDC relay (SELECT ... FOR UPDATE SKIP LOCKED, publish,
// DELETE), run on the relay's own workloads, environments, stream, subjects
// and headers, which the bench passes in as a Workload, so the two sets of
// figures can be read side by side.
package polling

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// Config is the poller's settings.
type Config struct {
	Batch    int           // rows per poll, the SELECT's LIMIT
	Interval time.Duration // sleep after a poll that finds no rows
	Workers  int           // workers for one extra multi-worker drain row; 1: no such row
}

// DefaultConfig returns a batch of 1000 rows, a 100ms interval and 4
// workers.
func DefaultConfig() Config {
	return Config{Batch: 1000, Interval: 100 * time.Millisecond, Workers: 4}
}

// Env is one throwaway Postgres with the outbox table and one nats-server,
// with a connection to it.
type Env struct {
	PG    *testenv.Postgres
	NC    *nats.Conn
	JS    jetstream.JetStream
	Close func() // stops both servers and removes their data
}

// Paced is what one paced run committed.
type Paced struct {
	N          int
	Elapsed    time.Duration
	LastCommit time.Time
}

// Quantiles summarises commit→stored latencies.
type Quantiles struct {
	P50, P99, P999, Max time.Duration
	// PerSecond is the largest latency of the events committed in each
	// second of the run, from its first commit.
	PerSecond []time.Duration
}

// Workload is what the baseline borrows from the relay's bench, so that
// both are measured the same way.
type Workload struct {
	// NewEnv starts an environment like the relay's drains run in.
	NewEnv func() (*Env, error)
	// Backlog commits n events in transactions of txSize.
	Backlog func(ctx context.Context, pg *testenv.Postgres, n, txSize int) error
	// Paced commits single-event transactions at rate per second for dur.
	Paced func(ctx context.Context, pg *testenv.Postgres, rate int, dur time.Duration) (Paced, error)
	// Latencies reads stream messages first..last and summarises their
	// commit→stored latency; who and rate name the run (for a CSV dump).
	Latencies func(ctx context.Context, js jetstream.JetStream, first, last uint64, who string, rate int) (Quantiles, error)
}
