package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSOptions configures NewNATS. The zero value is a standalone server.
type NATSOptions struct {
	// Port is the client port on 127.0.0.1. Zero picks a free one, and for a
	// standalone server picks again once if it is taken before the first start.
	Port int
	// ServerName is passed as --server_name. Default "nats-<port>".
	ServerName string
	// ClusterName, when set, makes the server a cluster node listening for
	// routes on ClusterPort (zero picks a free one) and dialing Routes.
	ClusterName string
	ClusterPort int
	Routes      []string
	// Config is extra configuration file text, written to <dir>/nats.conf
	// and passed with -c. Command-line settings above take precedence.
	Config string
	// ClientOptions are what the readiness probe connects with, for a
	// server whose Config requires authentication or TLS.
	ClientOptions []nats.Option
	// Binary is the nats-server to run. Empty means NATSServerBinary().
	Binary string
	// StartTimeout bounds how long Start waits. Default 30s.
	StartTimeout time.Duration
}

// NATS is one nats-server with JetStream, run as a child process.
type NATS struct {
	dir, storeDir, logFile, confFile, bin string
	name, clusterName                     string
	routes                                []string
	startTimeout                          time.Duration
	clientOpts                            []nats.Option

	mu          sync.Mutex
	port        int
	clusterPort int
	portPicked  bool
	everStarted bool
	frozen      bool
	proc        *child
}

// NewNATS prepares a server in dir without starting it: JetStream stores
// under <dir>/js and the server's output goes to <dir>/nats.log.
func NewNATS(dir string, opts NATSOptions) (*NATS, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("nats directory: %w", err)
	}
	n := &NATS{
		dir:          dir,
		storeDir:     filepath.Join(dir, "js"),
		logFile:      filepath.Join(dir, "nats.log"),
		bin:          opts.Binary,
		name:         opts.ServerName,
		clusterName:  opts.ClusterName,
		routes:       opts.Routes,
		startTimeout: opts.StartTimeout,
		clientOpts:   opts.ClientOptions,
		port:         opts.Port,
		clusterPort:  opts.ClusterPort,
	}
	if n.startTimeout == 0 {
		n.startTimeout = 30 * time.Second
	}
	if n.bin == "" {
		if n.bin, err = NATSServerBinary(); err != nil {
			return nil, err
		}
	}
	if n.port == 0 {
		if n.port, err = FreePort(); err != nil {
			return nil, err
		}
		n.portPicked = true
	}
	if n.clusterName != "" && n.clusterPort == 0 {
		if n.clusterPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if n.name == "" {
		n.name = "nats-" + strconv.Itoa(n.port)
	}
	if err := os.MkdirAll(n.storeDir, 0o755); err != nil {
		return nil, fmt.Errorf("create nats directory: %w", err)
	}
	if opts.Config != "" {
		n.confFile = filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(n.confFile, []byte(opts.Config), 0o644); err != nil {
			return nil, fmt.Errorf("write nats config: %w", err)
		}
	}
	return n, nil
}

func (n *NATS) args() []string {
	a := []string{"-js", "-sd", n.storeDir, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "--server_name", n.name}
	if n.confFile != "" {
		a = append(a, "-c", n.confFile)
	}
	if n.clusterName != "" {
		a = append(a, "--cluster_name", n.clusterName, "--cluster", n.clusterURL())
		if len(n.routes) > 0 {
			a = append(a, "--routes", strings.Join(n.routes, ","))
		}
	}
	return a
}

// Start runs nats-server and returns once it accepts client connections
// and, for a standalone server, JetStream answers. A cluster node cannot
// answer JetStream requests before a meta leader is elected, which needs a
// quorum of nodes; use WaitJetStream for that.
func (n *NATS) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && !n.proc.exited() {
		return fmt.Errorf("start nats-server %s: already running", n.name)
	}
	addrInUse, err := n.start()
	if addrInUse && n.portPicked && !n.everStarted && n.clusterName == "" {
		if n.port, err = FreePort(); err != nil {
			return err
		}
		_, err = n.start()
	}
	if err != nil {
		return err
	}
	n.everStarted = true
	n.frozen = false
	return nil
}

func (n *NATS) start() (addrInUse bool, err error) {
	logf, err := os.OpenFile(n.logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return false, fmt.Errorf("open nats log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	fi, err := logf.Stat()
	if err != nil {
		return false, fmt.Errorf("open nats log: %w", err)
	}
	logStart := fi.Size()

	cmd := exec.Command(n.bin, n.args()...)
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := startChild(cmd)
	if err != nil {
		return false, fmt.Errorf("start nats-server %s: %w", n.name, err)
	}
	n.proc = proc
	err = Poll(n.startTimeout, func() (bool, error) {
		if proc.exited() {
			return true, nil
		}
		return ready(n.url(), n.clusterName == "", n.clientOpts...)
	})
	if proc.exited() {
		log := n.logSince(logStart)
		return strings.Contains(log, "address already in use"),
			fmt.Errorf("nats-server %s exited during start; its log:\n%s", n.name, log)
	}
	if err != nil {
		_ = proc.signal(syscall.SIGKILL)
		_, _ = proc.wait(30 * time.Second)
		return false, fmt.Errorf("wait for nats-server %s: %w; its log:\n%s", n.name, err, n.logSince(logStart))
	}
	return false, nil
}

// ready connects to url once and, if withJS, asks JetStream for account info.
func ready(url string, withJS bool, opts ...nats.Option) (bool, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(time.Second), nats.NoReconnect()}, opts...)...)
	if err != nil {
		return false, err
	}
	defer nc.Close()
	if !withJS {
		return true, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return false, fmt.Errorf("jetstream account info from %s: %w", url, err)
	}
	return true, nil
}

// WaitJetStream polls until this server answers a JetStream request.
func (n *NATS) WaitJetStream(timeout time.Duration) error {
	url := n.URL()
	return Poll(timeout, func() (bool, error) { return ready(url, true, n.clientOpts...) })
}

func (n *NATS) logSince(offset int64) string {
	b, err := os.ReadFile(n.logFile)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", n.logFile, err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	return TailLines(string(b[offset:]), 100)
}

// Kill sends SIGKILL and waits for the process to exit.
func (n *NATS) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.running("kill"); err != nil {
		return err
	}
	if err := n.proc.signal(syscall.SIGKILL); err != nil {
		return err
	}
	_, err := n.proc.wait(30 * time.Second)
	return err
}

// Stop sends SIGTERM, which makes nats-server shut down cleanly, and waits
// up to 30s for it to exit before killing it. A frozen server is thawed first.
func (n *NATS) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.running("stop"); err != nil {
		return err
	}
	if n.frozen {
		if err := n.proc.signal(syscall.SIGCONT); err != nil {
			return err
		}
		n.frozen = false
	}
	if err := n.proc.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if _, err := n.proc.wait(30 * time.Second); err != nil {
		_ = n.proc.signal(syscall.SIGKILL)
		_, _ = n.proc.wait(30 * time.Second)
		return fmt.Errorf("stop nats-server %s: %w; killed it", n.name, err)
	}
	return nil
}

// Freeze sends SIGSTOP and returns once the process is stopped: its
// connections stay open but nothing answers, like a stalled host.
func (n *NATS) Freeze() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.running("freeze"); err != nil {
		return err
	}
	if err := n.proc.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	n.frozen = true
	return waitState(n.proc.pid(), 10*time.Second, "Tt")
}

// Thaw sends SIGCONT to a frozen server and returns once it runs again.
func (n *NATS) Thaw() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.running("thaw"); err != nil {
		return err
	}
	if err := n.proc.signal(syscall.SIGCONT); err != nil {
		return err
	}
	n.frozen = false
	return waitState(n.proc.pid(), 10*time.Second, "RSD")
}

func (n *NATS) running(what string) error {
	if n.proc == nil || n.proc.exited() {
		return fmt.Errorf("%s nats-server %s: %w", what, n.name, errNotRunning)
	}
	return nil
}

// Running reports whether the server process is running (frozen counts).
func (n *NATS) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running("") == nil
}

// Pid returns the server's process id, or 0 if it has never started.
func (n *NATS) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	return n.proc.pid()
}

// URL returns the client URL, nats://127.0.0.1:<port>.
func (n *NATS) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.url()
}

func (n *NATS) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// ClusterURL returns the route URL other nodes dial, or "" if not clustered.
func (n *NATS) ClusterURL() string {
	if n.clusterName == "" {
		return ""
	}
	return n.clusterURL()
}

func (n *NATS) clusterURL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.clusterPort) }

// Port returns the client port.
func (n *NATS) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.port
}

// Name returns the server name, which JetStream reports as stream leader.
func (n *NATS) Name() string { return n.name }

// Dir returns the server's directory.
func (n *NATS) Dir() string { return n.dir }

// StoreDir returns the JetStream store directory (-sd).
func (n *NATS) StoreDir() string { return n.storeDir }

// LogFile returns the path of the server's output, which every start appends to.
func (n *NATS) LogFile() string { return n.logFile }
