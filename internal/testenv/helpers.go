package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/schema"
)

// logLines is how many lines of a server log a failed test prints.
const logLines = 80

// StartPostgres starts a Postgres cluster in a fresh directory under
// os.TempDir() (short enough for the unix socket path, and reachable by the
// postgres user when running as root). At most one PostgresOptions may be
// given. Cleanup stops it with -m immediate and removes the directory; if
// the test failed, it first logs the tail of the server log.
func StartPostgres(t testing.TB, opts ...PostgresOptions) *Postgres {
	t.Helper()
	if len(opts) > 1 {
		t.Fatalf("StartPostgres: got %d PostgresOptions, want at most 1", len(opts))
	}
	var o PostgresOptions
	if len(opts) == 1 {
		o = opts[0]
	}
	dir, err := os.MkdirTemp("", "testenv-pg-")
	if err != nil {
		t.Fatalf("create postgres directory: %v", err)
	}
	var pg *Postgres
	t.Cleanup(func() {
		if pg != nil {
			if t.Failed() {
				t.Logf("postgres log %s (last %d lines):\n%s", pg.LogFile(), logLines, tailFile(pg.LogFile(), logLines))
			}
			if pg.Running() {
				if err := pg.Stop("immediate"); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: remove postgres directory: %v", err)
		}
	})
	if pg, err = NewPostgres(dir, o); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	return pg
}

// CreateOutbox creates the outbox table of schema.Outbox in pg's database.
func CreateOutbox(t testing.TB, pg *Postgres) {
	t.Helper()
	if err := pg.Exec(context.Background(), schema.Outbox); err != nil {
		t.Fatalf("create the outbox table: %v", err)
	}
}

// StartNATS starts a standalone nats-server with JetStream in a directory
// from t.TempDir(). At most one NATSOptions may be given. Cleanup kills it;
// if the test failed, it first logs the tail of the server's output.
func StartNATS(t testing.TB, opts ...NATSOptions) *NATS {
	t.Helper()
	if len(opts) > 1 {
		t.Fatalf("StartNATS: got %d NATSOptions, want at most 1", len(opts))
	}
	var o NATSOptions
	if len(opts) == 1 {
		o = opts[0]
	}
	n, err := NewNATS(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server %s log %s (last %d lines):\n%s", n.Name(), n.LogFile(), logLines, tailFile(n.LogFile(), logLines))
		}
		if n.Running() {
			if err := n.Kill(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	return n
}

// StartNATSCluster starts an n-node JetStream cluster and returns once a
// meta leader is elected. Cleanup kills every node; if the test failed, it
// first logs the tail of each node's output.
func StartNATSCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := NewNATSCluster(t.TempDir(), n)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Start()
		if err != nil && attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			// FreePort cannot reserve a port: another process (a test
			// package running in parallel) can bind one between the pick
			// and nats-server's listen. A lone server picks a new port and
			// retries; a cluster's routes name every node's port, so start
			// a new cluster on new ports.
			t.Logf("nats cluster: a port was taken before nats-server bound it; starting a new cluster (attempt %d)", attempt+1)
			if err := c.Kill(); err != nil {
				t.Logf("kill the first cluster: %v", err)
			}
			continue
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("nats cluster logs (last %d lines each):\n%s", logLines, c.logTails(logLines))
			}
			if err := c.Kill(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// BuildRelay builds the relay (the module's main package) once per test
// binary and returns the path of the binary.
func BuildRelay(t testing.TB) string {
	t.Helper()
	path, err := BuildBinary(".", "outboxrelay")
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// StartProcess starts bin with args, see StartCmd.
func StartProcess(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	return StartCmd(t, exec.Command(bin, args...))
}

// StartCmd starts cmd with its output captured to a file in t.TempDir().
// Cleanup kills it if it still runs; if the test failed, it first logs the
// tail of its output.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(cmd.Path)+".log")
	p, err := Launch(cmd, logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			if err := p.Kill(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("output of %s (pid %d), last 200 lines:\n%s", cmd.Path, p.Pid(), TailLines(p.Output(), 200))
		}
	})
	return p
}

// RunUntilCleanup runs a component's Run(ctx) in the background until the
// test ends or the returned stop is called, whichever is first. stop cancels
// ctx and fails the test unless Run then returns nil within timeout: a
// long-lived component stops cleanly when told to.
func RunUntilCleanup(t testing.TB, timeout time.Duration, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			timer := time.NewTimer(timeout)
			defer timer.Stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil after cancel", err)
				}
			case <-timer.C:
				t.Errorf("Run did not return within %s of cancel", timeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
