package capture

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// SlotLag returns how many bytes of WAL the slot holds back: the server's
// current WAL position minus the slot's confirmed position. It opens a
// short-lived ordinary connection, so it also works while the relay is not
// streaming.
func SlotLag(ctx context.Context, url, slot string) (int64, error) {
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return 0, fmt.Errorf("connect to postgres: %w", explain(err))
	}
	defer conn.Close(context.Background())
	rows, err := query(ctx, conn, "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = "+pgsql.Literal(slot))
	if err != nil {
		return 0, fmt.Errorf("read lag of slot %q: %w", slot, err)
	}
	if len(rows) == 0 || rows[0][0] == "" {
		return 0, fmt.Errorf("replication slot %q does not exist", slot)
	}
	return strconv.ParseInt(rows[0][0], 10, 64)
}
