package capture

// This file creates the slot as a failover slot (PostgreSQL 17+), which a
// standby with sync_replication_slots keeps in step, so that it survives a
// promotion (docs/operations.md, "Postgres failover").

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
	"github.com/outboxrelay/outboxrelay/internal/report"
)

// failoverSlot says whether the slot should be a failover slot on a server
// of version (server_version_num).
func (cfg Config) failoverSlot(version int, versionText string) (bool, error) {
	switch cfg.FailoverSlot {
	case "off":
		return false, nil
	case "on":
		if version < 170000 {
			return false, &PermanentError{errors.New(failoverVersionProblem(versionText))}
		}
		return true, nil
	}
	return version >= 170000, nil
}

// createLogicalSlot creates the slot with pgoutput, its snapshot used by
// the connection's open transaction, and returns its consistent point.
// pglogrepl has no FAILOVER option, so the command is written here.
func createLogicalSlot(ctx context.Context, conn *pgconn.PgConn, cfg Config, version int, versionText string) (pglogrepl.LSN, error) {
	failover, err := cfg.failoverSlot(version, versionText)
	if err != nil {
		return 0, err
	}
	sql := "CREATE_REPLICATION_SLOT " + pgsql.Ident(cfg.Slot) + " LOGICAL pgoutput USE_SNAPSHOT"
	if version >= 170000 {
		sql = fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'use', FAILOVER %t)", pgsql.Ident(cfg.Slot), failover)
	}
	rows, err := query(ctx, conn, sql)
	if err != nil {
		return 0, err
	}
	if len(rows) != 1 || len(rows[0]) < 2 {
		return 0, fmt.Errorf("CREATE_REPLICATION_SLOT returned %d rows", len(rows))
	}
	return pglogrepl.ParseLSN(rows[0][1])
}

// makeFailover turns an existing slot the relay does not stream into a
// failover slot, when it should be one and is not: a slot created by an
// earlier version, or by hand. Done before streaming, it changes nothing
// else about the slot.
func makeFailover(ctx context.Context, conn *pgconn.PgConn, cfg Config, st slotState, version int, versionText string) error {
	want, err := cfg.failoverSlot(version, versionText)
	if err != nil || !want || st.failover || st.synced {
		return err
	}
	if _, err := query(ctx, conn, "ALTER_REPLICATION_SLOT "+pgsql.Ident(cfg.Slot)+" (FAILOVER true)"); err != nil {
		return fmt.Errorf("make replication slot %q a failover slot (postgres.failover_slot): %w", cfg.Slot, explain(err))
	}
	cfg.Logger.Info("made the replication slot a failover slot, so that a standby with sync_replication_slots keeps it", "slot", cfg.Slot)
	return nil
}

func failoverVersionProblem(version string) string {
	return fmt.Sprintf("postgres.failover_slot is on, but failover slots need PostgreSQL 17 or later, and this server is %s: set postgres.failover_slot to auto or off", version)
}

// checkFailover reports whether the slot survives a failover: from
// PostgreSQL 17 it must be a failover slot, and the primary should hold
// logical replication back until the standby has the WAL
// (synchronized_standby_slots).
func (p *preflight) checkFailover(ctx context.Context, srv server, st slotState, slotErr error) {
	const item = "postgres failover"
	want, err := p.cfg.failoverSlot(srv.version, srv.versionText)
	if err != nil {
		p.add(report.Fail, item, "%v", err)
		return
	}
	if !want || slotErr != nil {
		return
	}
	if st.exists && !st.failover && !st.synced {
		p.add(report.Warn, item, "slot %q is not a failover slot, so a standby does not keep it, and after a failover the relay stops until it is recovered: the relay makes it one at its next start (postgres.failover_slot: auto), or run ALTER_REPLICATION_SLOT %s (FAILOVER true) on a replication connection", p.cfg.Slot, pgsql.Ident(p.cfg.Slot))
	}
	rows, err := query(ctx, p.conn, "SELECT coalesce(current_setting('synchronized_standby_slots', true), ''), (SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'physical')")
	if err != nil || len(rows) != 1 {
		return
	}
	if rows[0][1] == "0" {
		return // no standby streams through a slot: nothing to fail over to
	}
	if rows[0][0] == "" {
		p.add(report.Warn, item, "synchronized_standby_slots is not set: the relay may publish changes a standby has not received, which a failover to it loses from the database but not from the stream: set it to the standby's physical slot; the standby needs sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name, and dbname in primary_conninfo")
		return
	}
	p.add(report.OK, item, "the slot is, or is created as, a failover slot, and synchronized_standby_slots is %s; a standby needs sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name, and dbname in primary_conninfo", rows[0][0])
}
