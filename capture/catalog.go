package capture

// This file reads the catalog (the server's settings, the slot, the
// publication, the tables) and quotes what goes into SQL.

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// slotState is what pg_replication_slots says about the slot.
type slotState struct {
	exists    bool
	active    bool
	activePID string
	holder    string // who streams it, from pg_stat_replication
	confirmed pglogrepl.LSN
	lag       string           // bytes of WAL behind the server's position
	walStatus string           // reserved, extended, unreserved or lost
	safeSize  string           // bytes that can still be written before the slot is at risk
	invalid   string           // why Postgres invalidated the slot; "" while it is usable
	failover  bool             // a failover slot (17+)
	synced    bool             // synchronised from a primary: this server is a standby (17+)
	facts     continuity.Facts // read by ensure
	version   int              // server_version_num, set by ensure
}

// server is what the relay needs to know about the server's settings.
type server struct {
	walLevel    string
	version     int    // server_version_num, e.g. 150004
	versionText string // server_version, e.g. "15.4"
	maxSlots    int    // max_replication_slots
	slotsUsed   int
	maxSenders  int // max_wal_senders
	sendersUsed int
	keepSize    string // max_slot_wal_keep_size in MB; "-1" is unlimited
}

func readServer(ctx context.Context, conn *pgconn.PgConn) (server, error) {
	rows, err := query(ctx, conn, `SELECT current_setting('wal_level'), current_setting('server_version_num'), current_setting('server_version'),
		current_setting('max_replication_slots'), (SELECT count(*) FROM pg_replication_slots),
		current_setting('max_wal_senders'), (SELECT count(*) FROM pg_stat_replication),
		coalesce(current_setting('max_slot_wal_keep_size', true), '-1')`)
	if err != nil {
		return server{}, fmt.Errorf("read server settings: %w", err)
	}
	if len(rows) != 1 || len(rows[0]) != 8 {
		return server{}, fmt.Errorf("read server settings: got %d rows", len(rows))
	}
	r := rows[0]
	s := server{walLevel: r[0], versionText: r[2], keepSize: r[7]}
	for i, p := range []*int{nil, &s.version, nil, &s.maxSlots, &s.slotsUsed, &s.maxSenders, &s.sendersUsed} {
		if p == nil {
			continue
		}
		if *p, err = strconv.Atoi(r[i]); err != nil {
			return server{}, fmt.Errorf("read server settings: %q: %w", r[i], err)
		}
	}
	return s, nil
}

func tableExists(ctx context.Context, conn *pgconn.PgConn, table string) (bool, error) {
	schema, name := pgsql.SplitTable(table)
	rows, err := query(ctx, conn, "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "+pgsql.Literal(schema)+" AND c.relname = "+pgsql.Literal(name))
	if err != nil {
		return false, fmt.Errorf("look up outbox table %s: %w", table, err)
	}
	return len(rows) > 0, nil
}

// publication is what pg_publication says about the publication.
type publication struct {
	exists, allTables, inserts bool
	viaRoot                    bool            // publish_via_partition_root
	tables                     map[string]bool // "schema.name"
}

func (p publication) covers(table string) bool { return p.allTables || p.tables[table] }

func readPublication(ctx context.Context, conn *pgconn.PgConn, name string) (publication, error) {
	rows, err := query(ctx, conn, "SELECT puballtables, pubinsert, pubviaroot FROM pg_publication WHERE pubname = "+pgsql.Literal(name))
	if err != nil {
		return publication{}, fmt.Errorf("read publication %q: %w", name, err)
	}
	if len(rows) == 0 {
		return publication{}, nil
	}
	p := publication{exists: true, allTables: rows[0][0] == "t", inserts: rows[0][1] == "t", viaRoot: rows[0][2] == "t", tables: map[string]bool{}}
	rows, err = query(ctx, conn, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = "+pgsql.Literal(name))
	if err != nil {
		return publication{}, fmt.Errorf("read publication %q: %w", name, err)
	}
	for _, r := range rows {
		p.tables[r[0]] = true
	}
	return p, nil
}

func readSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotState, error) {
	rows, err := query(ctx, conn, `SELECT coalesce(s.plugin, ''), s.database IS NOT DISTINCT FROM current_database(), s.active, coalesce(s.active_pid::text, ''),
		coalesce(s.confirmed_flush_lsn::text, '0/0'), coalesce((pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint::text, ''),
		coalesce(s.wal_status, ''), coalesce(s.safe_wal_size::text, ''),
		coalesce(r.application_name, ''), coalesce(host(r.client_addr), ''), coalesce(s.database, ''),
		coalesce(to_jsonb(s) ->> 'invalidation_reason', ''), coalesce(to_jsonb(s) ->> 'conflicting', ''),
		coalesce(to_jsonb(s) ->> 'failover', ''), coalesce(to_jsonb(s) ->> 'synced', '')
		FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = `+pgsql.Literal(slot))
	if err != nil {
		return slotState{}, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	if len(rows) == 0 {
		return slotState{}, nil
	}
	r := rows[0]
	if r[0] != "pgoutput" {
		return slotState{}, &PermanentError{errors.New(slotPluginProblem(slot, r[0]))}
	}
	if r[1] != "t" {
		return slotState{}, &PermanentError{errors.New(slotDatabaseProblem(slot, r[10]))}
	}
	lsn, err := pglogrepl.ParseLSN(r[4])
	if err != nil {
		return slotState{}, fmt.Errorf("replication slot %q: confirmed_flush_lsn %q: %w", slot, r[4], err)
	}
	st := slotState{exists: true, active: r[2] == "t", activePID: r[3], confirmed: lsn, lag: r[5], walStatus: r[6], safeSize: r[7]}
	// invalidation_reason (17+) and conflicting (16+) through to_jsonb, so
	// that one query serves every version.
	switch {
	case r[11] != "":
		st.invalid = "invalidation_reason = " + r[11]
	case r[12] == "true":
		st.invalid = "conflicting with recovery"
	case st.walStatus == "lost":
		st.invalid = "wal_status = lost: WAL it needed was removed, past max_slot_wal_keep_size"
	}
	st.failover, st.synced = r[13] == "true", r[14] == "true"
	st.holder = "PID " + st.activePID
	if r[8] != "" || r[9] != "" {
		st.holder += fmt.Sprintf(" (application_name %q, client %s)", r[8], orUnknown(r[9], "local socket"))
	}
	return st, nil
}

func orUnknown(s, def string) string {
	if s == "" {
		return def
	}
	return s
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
