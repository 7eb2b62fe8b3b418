package capture

// This file connects to Postgres and explains why a connection or a setup
// statement failed, with the fix.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// connect opens a replication connection (replication=database), which also
// accepts simple SQL queries. With readWait above 0 its reads coalesce (see
// readCoalesce), and with receiveBuffer above 0 its TCP socket's receive
// buffer is that many bytes.
func connect(ctx context.Context, url string, readWait time.Duration, receiveBuffer int) (*pgconn.PgConn, error) {
	return dial(ctx, url, func(cfg *pgconn.Config) {
		cfg.RuntimeParams["replication"] = "database"
		if readWait > 0 {
			coalesceReads(cfg, readWait, receiveBuffer)
		}
	})
}

// connectPlain opens an ordinary connection, for queries beside a
// streaming replication connection.
func connectPlain(ctx context.Context, url string) (*pgconn.PgConn, error) {
	return dial(ctx, url, func(*pgconn.Config) {})
}

// dial connects to url with the settings set applies, named outboxrelay
// unless the URL names the application.
func dial(ctx context.Context, url string, set func(*pgconn.Config)) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres.url: %w", err)
	}
	set(cfg)
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "outboxrelay"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(cfg, err)
	}
	return conn, nil
}

// connectError says why a connection failed and what to do, separating a
// server that cannot be reached from one that refuses the role.
func connectError(cfg *pgconn.Config, err error) error {
	return fmt.Errorf("connect to postgres at %s:%d: %w", cfg.Host, cfg.Port, explainConnect(err, cfg.User))
}

func explainConnect(err error, user string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		var hostErr x509.HostnameError
		var caErr x509.UnknownAuthorityError
		switch {
		case errors.As(err, &hostErr):
			return fmt.Errorf("%w: the server's certificate does not list the host in postgres.url: use a host name it lists, or sslmode=verify-ca to check only the CA", err)
		case errors.As(err, &caErr):
			return fmt.Errorf("%w: set sslrootcert in postgres.url to the CA that signed the server's certificate", err)
		}
		var netErr net.Error
		if errors.As(err, &netErr) || pgconn.Timeout(err) {
			return fmt.Errorf("%w: %s", err, fixUnreachable)
		}
		return err
	}
	switch {
	case pgErr.Code == "42501" && isWALSenderDenied(pgErr.Message):
		return fmt.Errorf("%w: %s", err, noReplicationProblem(user))
	case pgErr.Code == "53300" && strings.Contains(pgErr.Message, "max_wal_senders"):
		return fmt.Errorf("%w: %s", err, fixWALSenders)
	}
	return explain(err)
}

// isWALSenderDenied reports whether a 42501 at connect time is about the
// REPLICATION attribute ("must be superuser or replication role to start
// walsender"; "permission denied to start WAL sender" from Postgres 16).
func isWALSenderDenied(msg string) bool {
	return strings.Contains(msg, "walsender") || strings.Contains(msg, "WAL sender") || strings.Contains(msg, "replication")
}

// explain adds the fix to the Postgres errors users meet while setting up.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "55000" && strings.Contains(pgErr.Message, "wal_level"):
		return fmt.Errorf("%w: %s", err, fixWALLevel)
	case pgErr.Code == "42501" && strings.Contains(pgErr.Message, "replication"):
		return fmt.Errorf("%w: grant it with ALTER ROLE <role> WITH REPLICATION", err)
	case pgErr.Code == "28000" || pgErr.Code == "28P01":
		return fmt.Errorf("%w: %s", err, fixAuth)
	case pgErr.Code == "53400":
		return fmt.Errorf("%w: %s", err, fixSlots)
	}
	return err
}
