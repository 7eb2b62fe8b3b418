package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PasswordAuthRole is a NOLOGIN role created on every Start. Members of it
// must authenticate with a password (scram-sha-256) over TCP; every other
// role is trusted.
const PasswordAuthRole = "password_auth"

// confFile is written on every NewPostgres and included from
// postgresql.conf, so reopening a directory can change the port or settings.
const confFile = "testenv.conf"

// errNotRunning is returned by Stop and Kill when there is nothing to stop.
var errNotRunning = errors.New("not running")

// PostgresOptions configures NewPostgres. The zero value is ready to use.
type PostgresOptions struct {
	// Port is the TCP port on 127.0.0.1. Zero picks a free one, and picks
	// again once if another process takes it before the first start.
	Port int
	// Settings are extra postgresql.conf settings, which override the
	// defaults (see NewPostgres). Values are quoted when written.
	Settings map[string]string
	// BinDir holds initdb and postgres. Empty means PostgresBinDir().
	BinDir string
	// RunAs is the OS user that runs initdb and postgres when the caller is
	// root. Default "postgres". Ignored when the caller is not root.
	RunAs string
	// StartTimeout bounds how long Start waits for Postgres to accept
	// connections, crash recovery included. Default 30s.
	StartTimeout time.Duration
}

// Postgres is one PostgreSQL cluster with its own directory, port and unix
// socket directory, run as a child process of the caller.
type Postgres struct {
	dir, dataDir, logFile, binDir string
	user                          *runAs
	settings                      map[string]string
	startTimeout                  time.Duration

	mu          sync.Mutex
	port        int
	portPicked  bool // port came from FreePort, so it may be replaced
	everStarted bool
	proc        *child
}

// NewPostgres prepares a cluster in dir without starting it: <dir>/data is
// the data directory (initdb'd unless it already holds a cluster), <dir> the
// unix socket directory, and <dir>/postgres.log the server log. The
// defaults are listen_addresses=127.0.0.1, wal_level=logical,
// max_wal_senders=10, max_replication_slots=10, fsync=off,
// full_page_writes=off, synchronous_commit=on, shared_buffers=16MB,
// max_connections=50 and timezone=UTC. When the caller is root, dir and its
// contents are given to opts.RunAs.
func NewPostgres(dir string, opts PostgresOptions) (*Postgres, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("postgres directory: %w", err)
	}
	// A unix socket path is limited to 107 bytes.
	if n := len(filepath.Join(dir, ".s.PGSQL.65535")); n > 100 {
		return nil, fmt.Errorf("postgres directory %s is too long for a unix socket path (%d bytes): use a shorter one, for example under %s", dir, n, os.TempDir())
	}
	p := &Postgres{
		dir:          dir,
		dataDir:      filepath.Join(dir, "data"),
		logFile:      filepath.Join(dir, "postgres.log"),
		binDir:       opts.BinDir,
		settings:     opts.Settings,
		startTimeout: opts.StartTimeout,
		port:         opts.Port,
	}
	if p.startTimeout == 0 {
		p.startTimeout = 30 * time.Second
	}
	if p.binDir == "" {
		if p.binDir, err = PostgresBinDir(); err != nil {
			return nil, err
		}
	}
	if p.user, err = lookupRunAs(opts.RunAs); err != nil {
		return nil, err
	}
	if p.port == 0 {
		if p.port, err = FreePort(); err != nil {
			return nil, err
		}
		p.portPicked = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create postgres directory: %w", err)
	}
	if err := p.user.checkReachable(dir); err != nil {
		return nil, err
	}
	if err := p.user.own(dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := p.initdb(); err != nil {
			return nil, err
		}
	}
	if err := p.writeConf(); err != nil {
		return nil, err
	}
	return p, nil
}

// Start runs the postgres binary as a child process and returns once it
// accepts connections (after crash recovery, if the last run was killed).
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && !p.proc.exited() {
		return fmt.Errorf("start postgres in %s: already running", p.dir)
	}
	addrInUse, err := p.start()
	if addrInUse && p.portPicked && !p.everStarted {
		if p.port, err = FreePort(); err != nil {
			return err
		}
		if err := p.writeConf(); err != nil {
			return err
		}
		_, err = p.start()
	}
	if err != nil {
		return err
	}
	p.everStarted = true
	return nil
}

// start makes one attempt, and reports whether it failed because the port
// was taken.
func (p *Postgres) start() (addrInUse bool, err error) {
	logf, err := os.OpenFile(p.logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return false, fmt.Errorf("open postgres log: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	fi, err := logf.Stat()
	if err != nil {
		return false, fmt.Errorf("open postgres log: %w", err)
	}
	logStart := fi.Size()

	cmd := exec.Command(filepath.Join(p.binDir, "postgres"), "-D", p.dataDir)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p.user.apply(cmd)
	proc, err := startChild(cmd)
	if err != nil {
		return false, fmt.Errorf("start postgres in %s: %w", p.dir, err)
	}
	p.proc = proc

	err = Poll(p.startTimeout, func() (bool, error) {
		if proc.exited() {
			return true, nil
		}
		return p.ready()
	})
	if proc.exited() {
		log := p.logSince(logStart)
		return strings.Contains(log, "Address already in use"),
			fmt.Errorf("postgres in %s exited during start; its log:\n%s", p.dir, log)
	}
	if err != nil {
		_ = killTree(proc, 30*time.Second)
		return false, fmt.Errorf("wait for postgres in %s to accept connections: %w; its log:\n%s", p.dir, err, p.logSince(logStart))
	}
	return false, nil
}

// ready connects once and makes sure PasswordAuthRole exists.
func (p *Postgres) ready() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.url())
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	// A standby is read-only; it has the role from its primary.
	_, err = conn.Exec(ctx, `DO $$BEGIN IF NOT pg_is_in_recovery() THEN CREATE ROLE `+PasswordAuthRole+` NOLOGIN; END IF;
		EXCEPTION WHEN duplicate_object THEN NULL; END$$`)
	if err != nil {
		return false, fmt.Errorf("create role %s: %w", PasswordAuthRole, err)
	}
	return true, nil
}

// logSince returns the log written after offset, at most the last 100 lines.
func (p *Postgres) logSince(offset int64) string {
	b, err := os.ReadFile(p.logFile)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logFile, err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	return TailLines(string(b[offset:]), 100)
}

// Stop shuts Postgres down as `pg_ctl stop -m mode` does, by signalling the
// postmaster, and waits up to a minute for it and its backends to exit. Mode
// is "smart", "fast" or "immediate"; "immediate" skips the shutdown
// checkpoint, so the next Start runs crash recovery.
func (p *Postgres) Stop(mode string) error {
	sigs := map[string]syscall.Signal{"smart": syscall.SIGTERM, "fast": syscall.SIGINT, "immediate": syscall.SIGQUIT}
	sig, ok := sigs[mode]
	if !ok {
		return fmt.Errorf("stop postgres: unknown mode %q (want smart, fast or immediate)", mode)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil || p.proc.exited() {
		return fmt.Errorf("stop postgres in %s: %w", p.dir, errNotRunning)
	}
	kids, err := childrenOf(p.proc.pid())
	if err != nil {
		return err
	}
	if err := p.proc.signal(sig); err != nil {
		return fmt.Errorf("stop postgres in %s: %w", p.dir, err)
	}
	if _, err := p.proc.wait(time.Minute); err != nil {
		_ = killTree(p.proc, 30*time.Second)
		return fmt.Errorf("stop postgres in %s (-m %s): %w; killed it", p.dir, mode, err)
	}
	// The postmaster waits for its children before exiting; this is a guard.
	return waitGone(kids, 30*time.Second)
}

// Kill sends SIGKILL to the postmaster and all its backends at once and
// waits until every one of them has exited, so that Start can run again on
// the same directory without "pre-existing shared memory block is still in
// use". Committed transactions survive: their WAL was written before the
// commit returned.
func (p *Postgres) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil || p.proc.exited() {
		return fmt.Errorf("kill postgres in %s: %w", p.dir, errNotRunning)
	}
	if err := killTree(p.proc, 30*time.Second); err != nil {
		return fmt.Errorf("kill postgres in %s: %w", p.dir, err)
	}
	return nil
}

// Running reports whether the postmaster is running.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil && !p.proc.exited()
}

// Pid returns the postmaster's process id, or 0 if it has never started.
func (p *Postgres) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.pid()
}

// URL returns the URL of the superuser "postgres" and database "postgres"
// over TCP, with sslmode=disable. Add replication=database for a replication
// connection.
func (p *Postgres) URL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.url()
}

func (p *Postgres) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// SocketURL is URL over the server's Unix socket instead of TCP.
func (p *Postgres) SocketURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("postgres://postgres@/postgres?host=%s&port=%d&sslmode=disable", url.QueryEscape(p.dir), p.port)
}

// URLFor returns the URL of database "postgres" as user, with password if it
// is not empty.
func (p *Postgres) URLFor(user, password string) string {
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("127.0.0.1:%d", p.Port()), Path: "/postgres", RawQuery: "sslmode=disable"}
	u.User = url.User(user)
	if password != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// Port returns the TCP port.
func (p *Postgres) Port() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.port
}

// Dir returns the directory holding the data directory, socket and log.
func (p *Postgres) Dir() string { return p.dir }

// DataDir returns the data directory (PGDATA).
func (p *Postgres) DataDir() string { return p.dataDir }

// LogFile returns the path of the server log, which every start appends to.
func (p *Postgres) LogFile() string { return p.logFile }

// Connect opens a connection as the superuser; the caller closes it.
func (p *Postgres) Connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		return nil, fmt.Errorf("connect to postgres on port %d: %w", p.Port(), err)
	}
	return conn, nil
}

// Exec runs sql as the superuser on a connection of its own.
func (p *Postgres) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec %q: %w", sql, err)
	}
	return nil
}
