package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// benchEnv is a throwaway Postgres with the outbox table, a nats-server,
// and a relay config pointing at both, in one temp dir.
type benchEnv struct {
	dir  string
	pg   *testenv.Postgres
	ns   *testenv.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
	port int    // the relay's HTTP port
	cfg  string // the relay's config file
}

func newBenchEnv() (_ *benchEnv, err error) {
	e := &benchEnv{}
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
	if e.ns, err = testenv.NewNATS(filepath.Join(e.dir, "nats"), testenv.NATSOptions{}); err != nil {
		return nil, err
	}
	if err := e.ns.Start(); err != nil {
		return nil, err
	}
	ddl, err := os.ReadFile("testdata/outbox.sql")
	if err != nil {
		return nil, err
	}
	if err := e.pg.Exec(context.Background(), string(ddl)); err != nil {
		return nil, err
	}
	if e.port, err = testenv.FreePort(); err != nil {
		return nil, err
	}
	e.cfg = filepath.Join(e.dir, "relay.yaml")
	body := fmt.Sprintf("postgres: {url: %q}\nnats: {url: %q}\nhttp: {listen: \"127.0.0.1:%d\"}\n", pgURL(e.pg), e.ns.URL(), e.port)
	if err := os.WriteFile(e.cfg, []byte(body), 0o600); err != nil {
		return nil, err
	}
	if e.nc, err = nats.Connect(e.ns.URL()); err != nil {
		return nil, err
	}
	e.js, _ = jetstream.New(e.nc)
	return e, nil
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

// startRelay starts bin/outboxrelay; stop it with stopRelay.
func (e *benchEnv) startRelay() (*testenv.Process, error) {
	cmd := exec.Command("bin/outboxrelay", "run", "-config", e.cfg)
	if relayProcs != "" {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+relayProcs)
	}
	relay, err := testenv.Launch(cmd, filepath.Join(e.dir, "relay.log"))
	if err != nil {
		return nil, fmt.Errorf("start bin/outboxrelay (run make build): %w", err)
	}
	return relay, nil
}

func stopRelay(relay *testenv.Process) {
	relay.Signal(syscall.SIGTERM)
	relay.Wait(30 * time.Second)
}

// waitStream waits until the relay's stream holds at least n messages.
func (e *benchEnv) waitStream(relay *testenv.Process, n uint64, timeout time.Duration) error {
	ctx := context.Background()
	return testenv.Poll(timeout, func() (bool, error) {
		if relay.Exited() {
			return false, fmt.Errorf("relay exited:\n%s", relay.Output())
		}
		st, err := e.js.Stream(ctx, "OUTBOX")
		if err != nil {
			return false, nil
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, nil
		}
		return info.State.Msgs >= n, nil
	})
}
