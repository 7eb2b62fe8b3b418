package capture

// This file creates the slot again with a snapshot, for recovery and
// backfill from the outbox table.

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// Recreate creates the slot again with a snapshot, for recovery from the
// outbox table (docs/operations.md, "Recovering from a continuity stop").
// It checks the setup as a session does, reads the facts and hands them to
// before, which may refuse; then it drops the slot if it exists, creates it
// again, and calls read on the connection inside the slot's snapshot, with
// the slot's consistent point: rows visible in the snapshot committed
// before that point, and every later commit streams from the slot. So
// reading the table and then streaming leaves no gap and no overlap.
func Recreate(ctx context.Context, cfg Config, before func(context.Context, *pgconn.PgConn, continuity.Facts) error,
	read func(ctx context.Context, conn *pgconn.PgConn, consistent pglogrepl.LSN) error) (continuity.Facts, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	conn, err := connect(ctx, cfg.URL, 0, 0)
	if err != nil {
		return continuity.Facts{}, err
	}
	defer conn.Close(context.Background())
	srv, st, err := setup(ctx, conn, cfg)
	if err != nil {
		return continuity.Facts{}, err
	}
	if st.active {
		return continuity.Facts{}, fmt.Errorf("%s: stop every relay on the slot first", slotActiveText(cfg.Slot, st))
	}
	facts, err := readFacts(ctx, conn, cfg, srv.version, st)
	if err != nil {
		return continuity.Facts{}, err
	}
	if err := before(ctx, conn, facts); err != nil {
		return continuity.Facts{}, err
	}
	if st.exists {
		if _, err := query(ctx, conn, "SELECT pg_drop_replication_slot("+pgsql.Literal(cfg.Slot)+")"); err != nil {
			return continuity.Facts{}, fmt.Errorf("drop replication slot %q: %w", cfg.Slot, explain(err))
		}
		cfg.Logger.Warn("dropped the replication slot to create it again with a snapshot", "slot", cfg.Slot, "confirmed_lsn", st.confirmed.String(), "invalid", st.invalid)
	}
	if _, err := query(ctx, conn, "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return continuity.Facts{}, fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	defer func() { _, _ = query(context.Background(), conn, "ROLLBACK") }()
	cp, err := createLogicalSlot(ctx, conn, cfg, srv.version, srv.versionText)
	if err != nil {
		return continuity.Facts{}, fmt.Errorf("create replication slot %q: %w", cfg.Slot, explain(err))
	}
	cfg.Logger.Info("created replication slot with a snapshot", "slot", cfg.Slot, "consistent_point", cp.String())
	if err := read(ctx, conn, cp); err != nil {
		return continuity.Facts{}, err
	}
	facts.SlotExists, facts.SlotConfirmed, facts.SlotInvalid = true, cp, ""
	return facts, nil
}
