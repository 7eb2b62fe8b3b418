// Package recovery publishes the outbox rows still in the table that the
// stream lacks, in the snapshot of a slot created again, so that streaming
// from that slot continues with no gap and no duplicate: after a
// continuity stop (outboxrelay recover), and on a first start with
// outbox.backfill: existing (docs/operations.md, "Recovering from a
// continuity stop").
package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/continuity"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/pgsql"
	"github.com/outboxrelay/outboxrelay/sink"
)

// Config says what to recover into which stream.
type Config struct {
	Capture capture.Config // the slot, publication and tables
	Tables  []decode.Table // the mapping, as the relay decodes
	JS      jetstream.JetStream
	Stream  string
	// Sink publishes the rows; its Run must be running. Its acker is told
	// of each, like any event.
	Sink *sink.Sink
	// DeadLetter sends invalid rows to the dead-letter subject; otherwise
	// recovery stops at the first, as the relay halts.
	DeadLetter bool
	// AcceptGap continues when rows may have been deleted before the
	// stream had them: their events are lost for good.
	AcceptGap bool
	// Backfill runs only on a first start (an empty stream and no slot) or
	// after an interrupted recovery, and is a no-op otherwise.
	Backfill bool
	// ChunkRows bounds how many event ids are held at once; each chunk
	// costs one read of the stream's headers. Default 100,000.
	ChunkRows int
	Logger    *slog.Logger
}

// Result counts what a recovery did.
type Result struct {
	Skipped   bool // a backfill that was not needed
	Rows      int  // rows read from the tables
	InStream  int  // of which the stream had already
	Published int  // of which were published (dead letters included)
	// Consistent is the new slot's consistent point: streaming continues
	// from it.
	Consistent pglogrepl.LSN
	// GapAccepted says that rows may have been deleted before the stream
	// had them, and AcceptGap let recovery continue.
	GapAccepted bool
}

// GapError says that events may be lost for good: the rows of events the
// stream lacks may already be deleted.
type GapError struct{ Text string }

func (e *GapError) Error() string { return e.Text }

// Run recovers: see the package comment.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.ChunkRows <= 0 {
		cfg.ChunkRows = 100_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	end, err := cfg.Sink.End(ctx)
	if err != nil {
		return Result{}, err
	}
	var res Result
	r := &run{cfg: cfg, end: end, res: &res}
	facts, err := capture.Recreate(ctx, cfg.Capture, r.before, r.read)
	if errors.Is(err, errSkip) {
		return Result{Skipped: true}, nil
	}
	if err != nil {
		return res, err
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := cfg.Sink.Drain(dctx); err != nil {
		return res, fmt.Errorf("wait for the stream to store the recovered rows: %w", err)
	}
	// Only now is the stream whole again: a stop before this leaves the
	// mark, and the next start asks for recovery again.
	if err := sink.RecordOrigin(ctx, cfg.JS, cfg.Stream, facts.Origin); err != nil {
		return res, err
	}
	return res, nil
}

var errSkip = errors.New("no backfill needed")

type run struct {
	cfg Config
	end continuity.End
	res *Result
}

// before refuses what recovery cannot fix, checks for a gap, and marks the
// stream as recovering before the slot is dropped.
func (r *run) before(ctx context.Context, conn *pgconn.PgConn, f continuity.Facts) error {
	if r.cfg.Backfill && !r.end.Recovering && !(r.end.Empty() && !f.SlotExists) {
		return errSkip
	}
	// Only the cluster, database and position checks apply: the slot and
	// the publication are what recovery replaces.
	g, e := f, r.end
	g.SlotExists, g.SlotInvalid = true, ""
	e.Recovering = false
	if e.HasOrigin {
		g.Publication = e.Origin.Publication
	}
	if err := continuity.Judge(g, e); err != nil {
		return fmt.Errorf("recovery cannot continue this stream: %w", err)
	}
	if !r.end.Empty() && !r.end.Recovering {
		kept, err := r.lastRowKept(ctx, conn)
		if err != nil {
			return err
		}
		if !kept {
			text := fmt.Sprintf("the row of the stream's last event (%q, commit LSN %s) is no longer in the outbox table, so rows are deleted once published (insert-then-delete, or a cleanup): events committed after it whose rows are deleted too cannot be recovered, and are lost for good", r.end.EventID, r.end.CommitLSN)
			if !r.cfg.AcceptGap {
				return &GapError{Text: text + "; to publish the rows still in the table and continue past that gap, run recover again with -accept-gap"}
			}
			r.cfg.Logger.Warn("continuing past an unrecoverable gap (-accept-gap): "+text, "stream", r.cfg.Stream, "last_seq", r.end.LastSeq)
			r.res.GapAccepted = true
		}
	}
	return sink.MarkRecovering(ctx, r.cfg.JS, r.cfg.Stream)
}

// lastRowKept reports whether the row of the stream's last event is still
// in an outbox table.
func (r *run) lastRowKept(ctx context.Context, conn *pgconn.PgConn) (bool, error) {
	if r.end.EventID == "" {
		return false, nil
	}
	for i, t := range r.cfg.Tables {
		rows, err := exec(ctx, conn, fmt.Sprintf("SELECT 1 FROM %s WHERE %s::text = %s LIMIT 1",
			pgsql.Qualified(r.cfg.Capture.Tables[i]), pgsql.Ident(t.Columns.ID), pgsql.Literal(r.end.EventID)))
		if err != nil {
			return false, fmt.Errorf("look up the stream's last event in %s: %w", r.cfg.Capture.Tables[i], err)
		}
		if len(rows.Rows) > 0 {
			return true, nil
		}
	}
	return false, nil
}
