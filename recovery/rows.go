package recovery

// This file reads the outbox tables in the slot's snapshot, chunk by chunk
// in the order recovered events are published (recoveryOrder), and
// publishes the rows whose ids the stream lacks.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
	"github.com/outboxrelay/outboxrelay/sink"
)

// fetchRows is how many rows one FETCH returns.
const fetchRows = 1000

// read publishes, table by table in configuration order and within a table
// in the order of recoveryOrder, the rows the stream lacks. The rows are decoded as pgoutput
// messages, so a recovered event is exactly what the relay would have
// published from the WAL, except for its position: all recovered events
// form one transaction just before the slot's consistent point, which
// sorts after the stream's last event and before everything the slot will
// deliver.
func (r *run) read(ctx context.Context, conn *pgconn.PgConn, consistent pglogrepl.LSN) error {
	r.res.Consistent = consistent
	dec := decode.NewDecoder(r.cfg.Tables...)
	if _, err := dec.Decode(beginMsg(consistent-1, time.Now())); err != nil {
		return err
	}
	for i, t := range r.cfg.Tables {
		if err := r.readTable(ctx, conn, dec, uint32(i+1), r.cfg.Capture.Tables[i], idColumn(t)); err != nil {
			return err
		}
	}
	r.cfg.Logger.Info("recovery read the outbox tables", "rows", r.res.Rows, "in_stream", r.res.InStream, "published", r.res.Published)
	return nil
}

func idColumn(t decode.Table) string {
	if t.Columns.ID == "" {
		return "id"
	}
	return t.Columns.ID
}

// recoveryOrder is the order recovered rows are published in: by the
// transaction that inserted them, oldest first; within one, by the
// statement (cmin), and within a statement by place in the heap. When an
// aggregate's writes are serialized (each transaction starts after the
// previous one committed), a later transaction has a later xid, so
// per-aggregate order holds. The heap alone does not keep a transaction's
// insertion order: Postgres may place a later row on an earlier page. With
// tableoid (the partition) before ctid the order is total on a partitioned
// table too, so both cursors read the rows in the same order.
const recoveryOrder = "ORDER BY age(xmin) DESC, cmin::text::bigint, tableoid, ctid"

// readTable reads the table's ids in chunks; for each chunk it reads the
// stream once to drop the ids it holds, then reads the same rows in full
// from a second cursor in the same order (the snapshot does not change,
// and ctid makes the order total) and publishes the rest.
func (r *run) readTable(ctx context.Context, conn *pgconn.PgConn, dec *decode.Decoder, relid uint32, table, idCol string) error {
	for _, c := range []string{
		fmt.Sprintf("DECLARE outboxrelay_ids NO SCROLL CURSOR FOR SELECT %s::text FROM %s %s", pgsql.Ident(idCol), pgsql.Qualified(table), recoveryOrder),
		fmt.Sprintf("DECLARE outboxrelay_rows NO SCROLL CURSOR FOR SELECT *, %s::text FROM %s %s", pgsql.Ident(idCol), pgsql.Qualified(table), recoveryOrder),
	} {
		if _, err := exec(ctx, conn, c); err != nil {
			return fmt.Errorf("read outbox table %s: %w", table, err)
		}
	}
	defer func() { _, _ = exec(context.Background(), conn, "CLOSE outboxrelay_ids; CLOSE outboxrelay_rows") }()
	schema, name := pgsql.SplitTable(table)
	sentRelation := false
	for {
		var ids []string
		for len(ids) < r.cfg.ChunkRows {
			res, err := exec(ctx, conn, fmt.Sprintf("FETCH %d FROM outboxrelay_ids", min(fetchRows, r.cfg.ChunkRows-len(ids))))
			if err != nil {
				return fmt.Errorf("read outbox table %s: %w", table, err)
			}
			for _, row := range res.Rows {
				ids = append(ids, string(row[0]))
			}
			if len(res.Rows) == 0 {
				break
			}
		}
		if len(ids) == 0 {
			return nil
		}
		r.res.Rows += len(ids)
		missing := make(map[string]bool, len(ids))
		for _, id := range ids {
			missing[id] = true
		}
		found, err := inStream(ctx, r.cfg.JS, r.cfg.Stream, r.end.LastSeq, missing)
		if err != nil {
			return err
		}
		r.res.InStream += found
		for left := len(ids); left > 0; {
			res, err := exec(ctx, conn, fmt.Sprintf("FETCH %d FROM outboxrelay_rows", min(fetchRows, left)))
			if err != nil {
				return fmt.Errorf("read outbox table %s: %w", table, err)
			}
			if len(res.Rows) == 0 {
				return fmt.Errorf("read outbox table %s: the rows cursor ended before the ids cursor", table)
			}
			left -= len(res.Rows)
			if !sentRelation {
				fields := res.FieldDescriptions[:len(res.FieldDescriptions)-1] // without the id's text
				if _, err := dec.Decode(relationMsg(relid, schema, name, fields)); err != nil {
					return fmt.Errorf("outbox table %s: %w", table, err)
				}
				sentRelation = true
			}
			for _, row := range res.Rows {
				if !missing[string(row[len(row)-1])] {
					continue
				}
				if err := r.publish(ctx, dec, relid, table, row[:len(row)-1]); err != nil {
					return err
				}
			}
		}
	}
}

// publish decodes one row and publishes it.
func (r *run) publish(ctx context.Context, dec *decode.Decoder, relid uint32, table string, row [][]byte) error {
	out, err := dec.Decode(insertMsg(relid, row))
	if err != nil {
		return fmt.Errorf("outbox table %s: %w", table, err)
	}
	ev := out.Event
	if ev.Invalid != "" && !r.cfg.DeadLetter {
		return &sink.InvalidEventError{Event: ev, Reason: ev.Invalid, Fix: sink.InvalidEventFix}
	}
	if err := r.cfg.Sink.Publish(ctx, ev); err != nil {
		return err
	}
	r.res.Published++
	return nil
}

func exec(ctx context.Context, conn *pgconn.PgConn, sql string) (*pgconn.Result, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return &pgconn.Result{}, nil
	}
	return results[len(results)-1], nil
}
