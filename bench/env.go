package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/bench/polling"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/schema"
)

// benchEnv is a throwaway Postgres with the outbox table and a
// nats-server, in one temp dir, where the relay's configs go too.
type benchEnv struct {
	o    *options
	dir  string
	pg   *testenv.Postgres
	ns   *testenv.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
	port int // the relay's HTTP port

	natsProfPort int // nats-server's pprof port, with -cpuprofile or -trace; else 0
}

func newBenchEnv(o *options) (_ *benchEnv, err error) {
	e := &benchEnv{o: o}
	if e.dir, err = os.MkdirTemp("", "outboxrelay-bench-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	// World-traversable: when run as root, Postgres runs as the postgres user.
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return nil, err
	}
	if e.pg, err = testenv.NewPostgres(filepath.Join(e.dir, "pg"), testenv.PostgresOptions{}); err != nil {
		return nil, err
	}
	if err := e.pg.Start(); err != nil {
		return nil, err
	}
	var natsOpts testenv.NATSOptions
	if o.profile != "" || o.trace != "" {
		if e.natsProfPort, err = testenv.FreePort(); err != nil {
			return nil, err
		}
		natsOpts.Config = fmt.Sprintf("prof_port: %d\n", e.natsProfPort)
	}
	if e.ns, err = testenv.NewNATS(filepath.Join(e.dir, "nats"), natsOpts); err != nil {
		return nil, err
	}
	if err := e.ns.Start(); err != nil {
		return nil, err
	}
	if err := e.pg.Exec(context.Background(), schema.Outbox); err != nil {
		return nil, err
	}
	if e.port, err = testenv.FreePort(); err != nil {
		return nil, err
	}
	if e.nc, err = nats.Connect(e.ns.URL()); err != nil {
		return nil, err
	}
	e.js, _ = jetstream.New(e.nc)
	return e, nil
}

// pgURL is the URL the relay and the limits use for Postgres.
func (e *benchEnv) pgURL() string {
	if e.o.pgSocket {
		return e.pg.SocketURL()
	}
	return e.pg.URL()
}

func (e *benchEnv) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.ns != nil {
		e.ns.Kill()
	}
	if e.pg != nil {
		e.pg.Stop("immediate")
	}
	os.RemoveAll(e.dir)
}

// createSlots creates the relay's publication and slot, and a slot for each
// of extra. Call it before writing any event: a slot sees only what commits
// after it exists. Left to the relay, its slot would be created while it
// starts, racing the first events: the stream it creates at the same time
// is no sign that the slot is there.
func (e *benchEnv) createSlots(ctx context.Context, extra ...string) error {
	sqls := []string{"CREATE PUBLICATION outboxrelay FOR TABLE outbox"}
	for _, slot := range append([]string{relaySlot(0)}, extra...) {
		sqls = append(sqls, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot))
	}
	for _, sql := range sqls {
		if err := e.pg.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

// relaySlot is the slot of a drain's run k: the relay's default slot for
// the first, then one more for each later run.
func relaySlot(k int) string {
	if k == 0 {
		return "outboxrelay"
	}
	return fmt.Sprintf("outboxrelay_%d", k)
}

// startRelay starts bin/outboxrelay on the relay's default slot; stop it
// with stopRelay.
func (e *benchEnv) startRelay() (*testenv.Process, error) {
	return e.startRelayOn(relaySlot(0))
}

// startRelayOn starts bin/outboxrelay on slot, which must exist, with a
// config of its own.
func (e *benchEnv) startRelayOn(slot string) (*testenv.Process, error) {
	cfg := filepath.Join(e.dir, slot+".yaml")
	body := fmt.Sprintf("postgres: {url: %q, slot: %q}\nnats: {url: %q}\nhttp: {listen: \"127.0.0.1:%d\"}\n", e.pgURL(), slot, e.ns.URL(), e.port)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("bin/outboxrelay", "run", "-config", cfg)
	if e.o.relayProcs != "" {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+e.o.relayProcs)
	}
	relay, err := testenv.Launch(cmd, filepath.Join(e.dir, slot+".log"))
	if err != nil {
		return nil, fmt.Errorf("start bin/outboxrelay (run make build): %w", err)
	}
	return relay, nil
}

func stopRelay(relay *testenv.Process) {
	relay.Signal(syscall.SIGTERM)
	relay.Wait(30 * time.Second)
}

// waitStream waits until the relay's stream holds at least n messages, and
// returns when its first and last messages were stored (nats-server's timestamp, on
// this machine's clock): a drain ends there, not when the poll noticed. If
// the stream does not fill, the error says how many it holds and ends with
// the relay's log, which says why.
func (e *benchEnv) waitStream(relay *testenv.Process, n uint64, timeout time.Duration, atFirst func(stored uint64)) (first, last time.Time, _ error) {
	ctx := context.Background()
	var have uint64
	err := testenv.Poll(timeout, func() (bool, error) {
		if relay.Exited() {
			return false, errors.New("relay exited")
		}
		st, err := e.js.Stream(ctx, "OUTBOX")
		if err != nil {
			return false, nil
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, nil
		}
		have, first, last = info.State.Msgs, info.State.FirstTime, info.State.LastTime
		if have > 0 && atFirst != nil {
			atFirst(have)
			atFirst = nil
		}
		return have >= n, nil
	})
	if err != nil {
		return first, last, fmt.Errorf("the stream holds %d of %d messages: %w; the relay's log:\n%s", have, n, err, testenv.TailLines(relay.Output(), 40))
	}
	return first, last, nil
}

// pollingWorkload lends the polling baseline the relay's environments and
// loads, so both are measured on the same.
func (o *options) pollingWorkload() polling.Workload {
	return polling.Workload{
		NewEnv: func() (*polling.Env, error) {
			e, err := newBenchEnv(o)
			if err != nil {
				return nil, err
			}
			return &polling.Env{PG: e.pg, NC: e.nc, JS: e.js, Close: e.close}, nil
		},
		Backlog: writeBacklog,
		Paced: func(ctx context.Context, pg *testenv.Postgres, rate int, dur time.Duration) (polling.Paced, error) {
			p, err := pacedInserts(ctx, pg, o.pacedBy, rate, dur)
			return polling.Paced{N: p.n, Elapsed: p.elapsed, LastCommit: p.lastCommit}, err
		},
		Latencies: func(ctx context.Context, js jetstream.JetStream, first, last uint64, who string, rate int) (polling.Quantiles, error) {
			return latencyQuantiles(ctx, js, first, last, o.csvPath(who, rate))
		},
	}
}
