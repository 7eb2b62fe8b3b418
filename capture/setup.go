package capture

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// connect opens a replication connection (replication=database), which also
// accepts simple SQL queries.
func connect(ctx context.Context, url string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres.url: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "outboxrelay"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres at %s:%d: %w", cfg.Host, cfg.Port, explain(err))
	}
	return conn, nil
}

// explain adds the fix to the Postgres errors users meet while setting up.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch {
	case pgErr.Code == "55000" && strings.Contains(pgErr.Message, "wal_level"):
		return fmt.Errorf("%w: set wal_level=logical in postgresql.conf and restart Postgres", err)
	case pgErr.Code == "42501" && strings.Contains(pgErr.Message, "replication"):
		return fmt.Errorf("%w: grant it with ALTER ROLE <role> WITH REPLICATION", err)
	case pgErr.Code == "28000" || pgErr.Code == "28P01":
		return fmt.Errorf("%w: check the user and password in postgres.url, and that pg_hba.conf allows replication connections for this role", err)
	case pgErr.Code == "53400":
		return fmt.Errorf("%w: raise max_replication_slots or max_wal_senders in postgresql.conf, or drop unused slots", err)
	}
	return err
}

// slotState is what pg_replication_slots says about the slot.
type slotState struct {
	exists    bool
	active    bool
	activePID string
	confirmed pglogrepl.LSN
}

// ensure creates the publication and the slot when they are missing and
// checks that existing ones fit. It returns the slot's state.
func ensure(ctx context.Context, conn *pgconn.PgConn, cfg Config) (slotState, error) {
	if err := ensurePublication(ctx, conn, cfg); err != nil {
		return slotState{}, err
	}
	st, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil || st.exists {
		return st, err
	}
	_, err = pglogrepl.CreateReplicationSlot(ctx, conn, cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication})
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") { // 42710: created meanwhile by a peer
		return slotState{}, fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	if err == nil {
		cfg.Logger.Info("created replication slot")
	}
	return readSlot(ctx, conn, cfg.Slot)
}

func ensurePublication(ctx context.Context, conn *pgconn.PgConn, cfg Config) error {
	rows, err := query(ctx, conn, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = "+literal(cfg.Publication))
	if err != nil {
		return fmt.Errorf("read publication %q: %w", cfg.Publication, err)
	}
	exists, err := query(ctx, conn, "SELECT 1 FROM pg_publication WHERE pubname = "+literal(cfg.Publication))
	if err != nil {
		return fmt.Errorf("read publication %q: %w", cfg.Publication, err)
	}
	if len(exists) == 0 {
		idents := make([]string, len(cfg.Tables))
		for i, t := range cfg.Tables {
			idents[i] = qualified(t)
		}
		sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", ident(cfg.Publication), strings.Join(idents, ", "))
		if len(idents) == 0 {
			// Only logical decoding messages: they need a publication
			// to stream, but not one with tables.
			sql = "CREATE PUBLICATION " + ident(cfg.Publication)
		}
		if _, err := query(ctx, conn, sql); err != nil {
			return fmt.Errorf("create publication %q for %s: %w (or create it yourself as a superuser: %s)", cfg.Publication, strings.Join(cfg.Tables, ", "), explain(err), sql)
		}
		cfg.Logger.Info("created publication", "publication", cfg.Publication, "tables", cfg.Tables)
		return nil
	}
	have := map[string]bool{}
	for _, r := range rows {
		have[r[0]] = true
	}
	for _, t := range cfg.Tables {
		if !have[t] {
			return fmt.Errorf("publication %q does not include table %s: run ALTER PUBLICATION %s ADD TABLE %s (or point postgres.publication at another publication)", cfg.Publication, t, ident(cfg.Publication), qualified(t))
		}
	}
	return nil
}

func readSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotState, error) {
	rows, err := query(ctx, conn, "SELECT plugin, database = current_database(), active, coalesce(active_pid::text, ''), coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = "+literal(slot))
	if err != nil {
		return slotState{}, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	if len(rows) == 0 {
		return slotState{}, nil
	}
	r := rows[0]
	if r[0] != "pgoutput" {
		return slotState{}, &PermanentError{fmt.Errorf("replication slot %q uses plugin %q, not pgoutput: set postgres.slot to another name, or drop the slot with SELECT pg_drop_replication_slot('%s')", slot, r[0], slot)}
	}
	if r[1] != "t" {
		return slotState{}, &PermanentError{fmt.Errorf("replication slot %q belongs to another database: set postgres.slot to another name", slot)}
	}
	lsn, err := pglogrepl.ParseLSN(r[4])
	if err != nil {
		return slotState{}, fmt.Errorf("replication slot %q: confirmed_flush_lsn %q: %w", slot, r[4], err)
	}
	return slotState{exists: true, active: r[2] == "t", activePID: r[3], confirmed: lsn}, nil
}

// query runs one simple-protocol statement (the only kind a replication
// connection accepts) and returns its rows as text.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, res := range results {
		for _, row := range res.Rows {
			r := make([]string, len(row))
			for i, v := range row {
				r[i] = string(v)
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// qualified quotes "schema.name" as "schema"."name".
func qualified(table string) string {
	schema, name, ok := strings.Cut(table, ".")
	if !ok {
		return ident(table)
	}
	return ident(schema) + "." + ident(name)
}
