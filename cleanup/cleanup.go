// Package cleanup deletes outbox rows whose events are confirmed, for
// services that do not delete them in the transaction that inserts them
// (outbox.cleanup.after).
//
// Which rows are safe to delete is decided without any bookkeeping per
// event. Every tick the cleaner takes a mark: the oldest transaction still
// running (the xmin of a fresh snapshot) and the current WAL insert
// position. A row whose inserting transaction is older than that xmin
// committed before the mark, so its commit record lies before the mark's
// LSN. Once the relay has confirmed the slot past that LSN and the mark is
// older than After, every such row's event is stored in the stream, and the
// row is deleted, in batches. Rows that were already in a table before the
// relay's slot existed are never published and are deleted too.
package cleanup

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Config says what to clean.
type Config struct {
	URL    string        // Postgres connection string (an ordinary connection)
	Tables []string      // "schema.name"
	After  time.Duration // how long a confirmed row is kept
	Batch  int           // rows per DELETE; default 1000
	Logger *slog.Logger
}

// Cleaner deletes confirmed rows. Run it once.
type Cleaner struct {
	cfg       Config
	confirmed func() pglogrepl.LSN
	marks     []mark
	deleted   atomic.Uint64
}

// maxMarks bounds the marks kept while the relay confirms nothing.
const maxMarks = 1024

type mark struct {
	at   time.Time
	xmin string // 32-bit xid, as text
	lsn  pglogrepl.LSN
}

// New returns a cleaner; confirmed reports the LSN the relay has confirmed
// to Postgres.
func New(cfg Config, confirmed func() pglogrepl.LSN) *Cleaner {
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Cleaner{cfg: cfg, confirmed: confirmed}
}

// Deleted returns how many rows were deleted.
func (c *Cleaner) Deleted() uint64 { return c.deleted.Load() }

// deadline bounds a connect and a step.
const deadline = time.Minute

// Run cleans until ctx ends. Errors are logged and retried at the next
// tick: cleanup never stops the relay.
func (c *Cleaner) Run(ctx context.Context) {
	tick := min(max(c.cfg.After/4, 250*time.Millisecond), time.Minute)
	t := time.NewTicker(tick)
	defer t.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	failing := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn == nil || conn.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, deadline)
			var err error
			conn, err = pgx.Connect(cctx, c.cfg.URL)
			cancel()
			if err != nil {
				conn = nil
				failing = c.warn(failing, "cannot connect to postgres", err)
				continue
			}
		}
		// A silent link fails the step at the deadline rather than hang it.
		sctx, cancel := context.WithTimeout(ctx, deadline)
		err := c.step(sctx, conn, time.Now())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failing = c.warn(failing, "cleanup failed; it is retried", err)
			conn.Close(context.Background())
			conn = nil
			continue
		}
		failing = ""
	}
}

// warn logs a problem once until it changes or goes away.
func (c *Cleaner) warn(last, msg string, err error) string {
	if s := err.Error(); s != last {
		c.cfg.Logger.Warn("outbox cleanup: "+msg, "err", err)
		return s
	}
	return last
}

// step takes a mark and deletes the rows of the newest ripe one.
func (c *Cleaner) step(ctx context.Context, conn *pgx.Conn, now time.Time) error {
	var m mark
	var lsn string
	err := conn.QueryRow(ctx, `SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric % 4294967296)::text,
		pg_current_wal_insert_lsn()::text`).Scan(&m.xmin, &lsn)
	if err != nil {
		return fmt.Errorf("take a cleanup mark: %w", err)
	}
	if m.lsn, err = pglogrepl.ParseLSN(lsn); err != nil {
		return err
	}
	m.at = now
	// While nothing is confirmed (a halt, an outage) marks pile up; past
	// maxMarks the older marks are enough, and only delete less.
	if len(c.marks) < maxMarks {
		c.marks = append(c.marks, m)
	}

	confirmed := c.confirmed()
	ripe := -1
	for i, k := range c.marks {
		if now.Sub(k.at) >= c.cfg.After && k.lsn <= confirmed {
			ripe = i
		}
	}
	if ripe < 0 {
		return nil
	}
	k := c.marks[ripe]
	for _, t := range c.cfg.Tables {
		if err := c.clean(ctx, conn, t, k.xmin); err != nil {
			return err
		}
	}
	c.marks = append(c.marks[:0], c.marks[ripe+1:]...)
	return nil
}

// clean deletes the rows of table inserted by transactions older than
// xmin, a batch at a time. The outer test of xmin is for a partitioned
// table: a ctid is unique only within one partition, and the row at the
// same ctid in another may be one whose event is not stored yet.
func (c *Cleaner) clean(ctx context.Context, conn *pgx.Conn, table, xmin string) error {
	t := qualified(table)
	sql := fmt.Sprintf(`DELETE FROM %s WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM %s WHERE age(xmin) > age($1::text::xid) LIMIT $2)) AND age(xmin) > age($1::text::xid)`, t, t)
	for {
		tag, err := conn.Exec(ctx, sql, xmin, c.cfg.Batch)
		if err != nil {
			if strings.Contains(err.Error(), "SQLSTATE 42501") {
				return fmt.Errorf("delete from %s: %w: grant it with GRANT DELETE ON %s TO <the relay's role>, or turn cleanup off (outbox.cleanup.after: 0)", table, err, t)
			}
			return fmt.Errorf("delete from %s: %w", table, err)
		}
		n := tag.RowsAffected()
		c.deleted.Add(uint64(n))
		if n > 0 {
			c.cfg.Logger.Debug("outbox cleanup", "table", table, "deleted", n)
		}
		if n < int64(c.cfg.Batch) {
			return nil
		}
	}
}

func qualified(table string) string {
	schema, name, _ := strings.Cut(table, ".")
	return pgx.Identifier{schema, name}.Sanitize()
}
