package capture

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// SlotStatus is what pg_replication_slots says about the slot's WAL.
type SlotStatus struct {
	Lag int64 // bytes of WAL held back: pg_current_wal_lsn() - confirmed_flush_lsn
	// WALStatus is reserved, extended, unreserved or lost: whether the WAL
	// the slot needs is still kept (Postgres 13+).
	WALStatus string
	// SafeWALSize is how many more bytes of WAL can be written before the
	// slot is past max_slot_wal_keep_size; SafeWALSizeKnown is false when
	// there is no limit (NULL).
	SafeWALSize      int64
	SafeWALSizeKnown bool
	Active           bool // a process streams from the slot
	// KeepSize is max_slot_wal_keep_size in bytes, -1 when unlimited: the
	// scale safe_wal_size is measured against.
	KeepSize int64
}

// ReadSlotStatus reads the slot's status. It opens a short-lived ordinary
// connection, so it also works while the relay is not streaming.
func ReadSlotStatus(ctx context.Context, url, slot string) (SlotStatus, error) {
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return SlotStatus{}, fmt.Errorf("connect to postgres: %w", explain(err))
	}
	defer conn.Close(context.Background())
	// One query for all of it: wal_status and safe_wal_size exist since
	// Postgres 13, and current_setting reads max_slot_wal_keep_size with
	// its unit ("1GB", "-1"), which pg_size_bytes turns into bytes.
	rows, err := query(ctx, conn, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, coalesce(wal_status, ''),
		coalesce(safe_wal_size::text, ''), active, pg_size_bytes(current_setting('max_slot_wal_keep_size'))
		FROM pg_replication_slots WHERE slot_name = `+pgsql.Literal(slot))
	if err != nil {
		return SlotStatus{}, fmt.Errorf("read status of slot %q: %w", slot, err)
	}
	if len(rows) == 0 || rows[0][0] == "" {
		return SlotStatus{}, fmt.Errorf("replication slot %q does not exist", slot)
	}
	var st SlotStatus
	if st.Lag, err = strconv.ParseInt(rows[0][0], 10, 64); err != nil {
		return SlotStatus{}, fmt.Errorf("slot %q lag %q: %w", slot, rows[0][0], err)
	}
	st.WALStatus, st.Active = rows[0][1], rows[0][3] == "t"
	if rows[0][2] != "" {
		if st.SafeWALSize, err = strconv.ParseInt(rows[0][2], 10, 64); err != nil {
			return SlotStatus{}, fmt.Errorf("slot %q safe_wal_size %q: %w", slot, rows[0][2], err)
		}
		st.SafeWALSizeKnown = true
	}
	if st.KeepSize, err = strconv.ParseInt(rows[0][4], 10, 64); err != nil {
		return SlotStatus{}, fmt.Errorf("max_slot_wal_keep_size %q: %w", rows[0][4], err)
	}
	return st, nil
}
