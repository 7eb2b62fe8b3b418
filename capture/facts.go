package capture

// This file gathers what the continuity check (package continuity) needs
// from Postgres, and re-checks the publication while streaming.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
)

// readFacts reads the cluster's identity, the slot's state and the
// publication's fingerprint on a replication connection.
func readFacts(ctx context.Context, conn *pgconn.PgConn, cfg Config, version int, st slotState) (continuity.Facts, error) {
	id, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return continuity.Facts{}, fmt.Errorf("identify system: %w", explain(err))
	}
	fp, err := fingerprint(ctx, conn, cfg.Publication, cfg.Tables, version)
	if err != nil {
		return continuity.Facts{}, err
	}
	return continuity.Facts{
		Origin:        continuity.Origin{SystemID: id.SystemID, Database: id.DBName, Publication: fp},
		Slot:          cfg.Slot,
		ServerLSN:     id.XLogPos,
		SlotExists:    st.exists,
		SlotConfirmed: st.confirmed,
		SlotInvalid:   st.invalid,
	}, nil
}

// fingerprint names the publication and each outbox table by the catalog
// rows that a change which can hide inserts from the slot replaces: the
// publication's row version (xmin changes with ALTER PUBLICATION ... SET),
// each table's OID (a re-created table) and its membership row in the
// publication (dropped and added again). Freezing keeps xmin, so the
// fingerprint of an unchanged publication stays the same.
func fingerprint(ctx context.Context, conn *pgconn.PgConn, pub string, tables []string, version int) (string, error) {
	rows, err := query(ctx, conn, "SELECT oid::text || '/' || xmin::text FROM pg_publication WHERE pubname = "+pgsql.Literal(pub))
	if err != nil {
		return "", fmt.Errorf("read publication %q: %w", pub, explain(err))
	}
	parts := []string{"publication " + pub + " missing"}
	if len(rows) == 1 {
		parts[0] = "publication " + pub + " " + rows[0][0]
	}
	schemaMember := ""
	if version >= 150000 { // FOR TABLES IN SCHEMA
		schemaMember = "(SELECT 'schema:' || pn.oid FROM pg_publication_namespace pn WHERE pn.pnpubid = p.oid AND pn.pnnspid = c.relnamespace), "
	}
	for _, t := range tables {
		schema, name := pgsql.SplitTable(t)
		rows, err := query(ctx, conn, `SELECT c.oid::text || '/' || coalesce(
			(SELECT pr.oid::text FROM pg_publication_rel pr WHERE pr.prpubid = p.oid AND pr.prrelid = c.oid), `+schemaMember+`
			CASE WHEN p.puballtables THEN 'all' END, 'none')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_publication p ON p.pubname = `+pgsql.Literal(pub)+`
			WHERE n.nspname = `+pgsql.Literal(schema)+` AND c.relname = `+pgsql.Literal(name))
		if err != nil {
			return "", fmt.Errorf("read outbox table %s: %w", t, explain(err))
		}
		state := "missing"
		if len(rows) == 1 {
			state = rows[0][0]
		}
		parts = append(parts, t+" "+state)
	}
	return strings.Join(parts, ", "), nil
}

// DefaultCheckInterval is how often the publication is checked while
// streaming.
const DefaultCheckInterval = 10 * time.Second

// watch re-reads the publication's fingerprint every cfg.CheckInterval, and
// soon after a poke (when the confirmed position waits for a check), on a
// connection of its own. It advances c.checked to the WAL position read
// before each check that found it unchanged: a change committed before that
// position is visible to the check. When the fingerprint changed it returns
// the continuity error. It returns nil when ctx ends.
func (c *Capture) watch(ctx context.Context, was string, version int) error {
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.poke:
			if wait := time.Until(last.Add(minCheckGap)); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var err error
			conn, err = connectPlain(cctx, c.cfg.URL)
			cancel()
			if err != nil {
				if ctx.Err() == nil && !c.shuttingDown(err) {
					c.log.Warn("publication check: cannot connect; the slot is not confirmed past the last check until it can", "err", err)
				}
				continue
			}
		}
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		now, lsn, err := c.check(qctx, conn, version)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !c.shuttingDown(err) {
				c.log.Warn("publication check failed; the slot is not confirmed past the last check until it succeeds", "err", err)
			}
			conn.Close(context.Background())
			conn = nil
			continue
		}
		if err := continuity.Changed(was, now, pglogrepl.LSN(c.checked.Load())); err != nil {
			return err
		}
		c.checked.Store(uint64(lsn))
	}
}

// minCheckGap is the least time between two publication checks.
const minCheckGap = time.Second

// shuttingDown reports whether err says that Postgres is shutting down.
// Its walsender then waits for the relay to confirm the final position
// before it exits, and no transaction can commit any more, so the checks
// stop holding the confirmed position back: were a change committed since
// the last check, the next session's start finds it against the stream's
// recorded fingerprint.
func (c *Capture) shuttingDown(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || (pgErr.Code != "57P03" && pgErr.Code != "57P01") {
		return false
	}
	if c.checked.Swap(math.MaxUint64) != math.MaxUint64 {
		c.log.Info("postgres is shutting down; confirming its final position", "err", err)
	}
	return true
}

func (c *Capture) check(ctx context.Context, conn *pgconn.PgConn, version int) (string, pglogrepl.LSN, error) {
	rows, err := query(ctx, conn, "SELECT pg_current_wal_lsn()")
	if err != nil {
		return "", 0, err
	}
	if len(rows) != 1 {
		return "", 0, fmt.Errorf("pg_current_wal_lsn: got %d rows", len(rows))
	}
	lsn, err := pglogrepl.ParseLSN(rows[0][0])
	if err != nil {
		return "", 0, err
	}
	fp, err := fingerprint(ctx, conn, c.cfg.Publication, c.cfg.Tables, version)
	return fp, lsn, err
}

// ReadFacts reads, without changing anything, what a session start would
// hand to the continuity check: for check.
func ReadFacts(ctx context.Context, cfg Config) (continuity.Facts, error) {
	conn, err := connect(ctx, cfg.URL, 0, 0)
	if err != nil {
		return continuity.Facts{}, err
	}
	defer conn.Close(context.Background())
	srv, err := readServer(ctx, conn)
	if err != nil {
		return continuity.Facts{}, err
	}
	st, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return continuity.Facts{}, err
	}
	return readFacts(ctx, conn, cfg, srv.version, st)
}
