package testenv_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

func TestPostgresSettingsAndAuth(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Settings: map[string]string{"application_name": "it's testenv"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for setting, want := range map[string]string{
		"wal_level":        "logical",
		"application_name": "it's testenv",
		"port":             itoa(pg.Port()),
	} {
		var got string
		if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}

	if err := pg.Exec(ctx, "CREATE ROLE relay LOGIN REPLICATION PASSWORD 'secret' IN ROLE "+testenv.PasswordAuthRole); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "CREATE ROLE reader LOGIN"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, password string
		ok             bool
	}{
		{"relay", "secret", true},
		{"relay", "wrong", false},
		{"relay", "", false},
		{"reader", "", true}, // not in password_auth: trusted
	} {
		c, err := pgx.Connect(ctx, pg.URLFor(tc.user, tc.password))
		if err == nil {
			c.Close(ctx)
		}
		if got := err == nil; got != tc.ok {
			t.Errorf("connect as %s with password %q: err = %v, want success %v", tc.user, tc.password, err, tc.ok)
		}
	}
}

func TestPostgresKillAndRestart(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pg.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	open, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	pid := pg.Pid()

	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if pg.Running() {
		t.Error("Running() = true after Kill")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postmaster %d still exists after Kill: kill(0) = %v", pid, err)
	}
	if _, err := open.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("connection opened before Kill still works")
	}

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if got, want := countRows(ctx, t, pg), 2; got != want {
		t.Errorf("rows after kill and restart = %d, want %d", got, want)
	}

	// Twice in a row, to catch leftovers of the first crash.
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if got, want := countRows(ctx, t, pg), 2; got != want {
		t.Errorf("rows after second kill and restart = %d, want %d", got, want)
	}
}

func TestPostgresStopAndRestart(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pg.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"immediate", "fast"} {
		if err := pg.Stop(mode); err != nil {
			t.Fatal(err)
		}
		if err := pg.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatalf("query succeeded after Stop(%q)", mode)
		}
		if err := pg.Start(); err != nil {
			t.Fatal(err)
		}
		if got, want := countRows(ctx, t, pg), 1; got != want {
			t.Errorf("rows after Stop(%q) and Start = %d, want %d", mode, got, want)
		}
	}
	if err := pg.Stop("sideways"); err == nil {
		t.Error("Stop with an unknown mode succeeded")
	}
}

func countRows(ctx context.Context, t *testing.T, pg *testenv.Postgres) int {
	t.Helper()
	conn, err := pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPostgresPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dir, err := os.MkdirTemp("", "testenv-pg-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	pg, err := testenv.NewPostgres(dir, testenv.PostgresOptions{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	err = pg.Start()
	if err == nil {
		_ = pg.Stop("immediate")
		t.Fatalf("Start on taken port %d succeeded", port)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("Start on a taken port: error %q does not quote the log", err)
	}
	if pg.Running() {
		t.Error("Running() = true after a failed Start")
	}
}
