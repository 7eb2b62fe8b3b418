// Package continuity decides whether what a replication slot will deliver
// continues exactly where the relay's stream ends (invariant I7,
// docs/design.md, "The database's lifecycle"). It compares what a session
// finds in Postgres (Facts) with what the stream holds (End) and says what
// broke, and how to recover, when it cannot prove that nothing was lost.
package continuity

import (
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// Origin names where a stream's events come from. The relay records it in
// the stream's metadata, and a later session must find the same.
type Origin struct {
	SystemID string // the cluster's system identifier (IDENTIFY_SYSTEM)
	Database string
	// Publication fingerprints the publication and the outbox tables in it:
	// it changes when the publication is altered or re-created, or a table
	// is re-created or dropped from it and added again, which are the
	// changes that can hide inserts from the slot.
	Publication string
}

// Facts are what a session found in Postgres before streaming.
type Facts struct {
	Origin
	Slot          string
	ServerLSN     pglogrepl.LSN // the server's current WAL position
	SlotExists    bool
	SlotConfirmed pglogrepl.LSN
	// SlotInvalid says why Postgres invalidated the slot ("" while it is
	// usable): wal_status lost, conflicting, or invalidation_reason.
	SlotInvalid string
}

// End is what the stream holds.
type End struct {
	Stream     string
	LastSeq    uint64        // 0 for an empty stream
	CommitLSN  pglogrepl.LSN // of the last message, when Found
	CommitTime time.Time
	EventID    string
	Found      bool // the last message could be read
	Origin     Origin
	HasOrigin  bool // the stream's metadata records an origin
	// Recovering says that a recovery or backfill into the stream was
	// interrupted: rows may be left that the new slot will not deliver.
	Recovering bool
}

// Empty reports whether the stream has never held an event.
func (e End) Empty() bool { return e.LastSeq == 0 }

// Error says that continuity cannot be proven: what was found, and the
// recovery. The relay stops at it, before publishing or confirming
// anything.
type Error struct {
	What string // what changed
	Fix  string
}

func (e *Error) Error() string { return "continuity lost: " + e.What + ": " + e.Fix }

// RecoverFix is the recovery when the outbox table may still hold what the
// slot cannot deliver any more.
const RecoverFix = "no event after the stream's last one can be proven delivered. Stop every relay on this slot and run outboxrelay recover -config FILE: it creates the slot again and publishes, exactly once, the outbox rows still in the table that the stream lacks (docs/operations.md, \"Recovering from a continuity stop\")"

// Judge returns an *Error when the slot described by f may not continue
// where the stream ends, and nil when it provably does (or when this is a
// first start: an empty stream and no slot).
func Judge(f Facts, e End) error {
	if e.HasOrigin && !e.Empty() {
		if e.Origin.SystemID != f.SystemID {
			return &Error{
				What: fmt.Sprintf("stream %q holds events from Postgres cluster %s, and postgres.url points at cluster %s (system identifiers differ)", e.Stream, e.Origin.SystemID, f.SystemID),
				Fix:  "point postgres.url at the database the stream was filled from, or give this database its own stream (nats.stream); a restored backup or a new cluster cannot continue another's stream",
			}
		}
		if e.Origin.Database != f.Database {
			return &Error{
				What: fmt.Sprintf("stream %q holds events from database %q, and postgres.url names database %q", e.Stream, e.Origin.Database, f.Database),
				Fix:  "point postgres.url at database " + quote(e.Origin.Database) + ", or give this database its own stream (nats.stream)",
			}
		}
	}
	if e.Found && e.CommitLSN > f.ServerLSN {
		return &Error{
			What: fmt.Sprintf("stream %q ends at commit LSN %s (%s), ahead of the server's current WAL position %s: the database is a restored backup, or another cluster", e.Stream, e.CommitLSN, timeText(e.CommitTime), f.ServerLSN),
			Fix:  "point postgres.url at the database the stream was filled from, or give this database its own stream (nats.stream)",
		}
	}
	if e.Recovering {
		return &Error{
			What: fmt.Sprintf("a recovery or backfill into stream %q stopped before it had published every row of the outbox table", e.Stream),
			Fix:  "run outboxrelay recover -config FILE again: it publishes the rows the stream still lacks, exactly once (docs/operations.md, \"Recovering from a continuity stop\")",
		}
	}
	if e.Empty() {
		return nil // a first start: nothing to continue
	}
	where := e.where()
	switch {
	case !f.SlotExists:
		return &Error{
			What: fmt.Sprintf("replication slot %q is missing, but stream %q holds events up to %s: the slot was dropped, or Postgres failed over to a server without it, and events committed since may never reach the relay", f.Slot, e.Stream, where),
			Fix:  RecoverFix,
		}
	case f.SlotInvalid != "":
		return &Error{
			What: fmt.Sprintf("replication slot %q was invalidated by Postgres (%s), and stream %q ends at %s: the WAL after that is gone", f.Slot, f.SlotInvalid, e.Stream, where),
			Fix:  RecoverFix,
		}
	case e.HasOrigin && e.Origin.Publication != f.Publication:
		return &Error{
			What: fmt.Sprintf("the publication or an outbox table changed since stream %q last checked them (was %s, now %s): a re-created table, a table dropped from the publication and added again, or ALTER PUBLICATION can hide inserts from the slot after %s", e.Stream, e.Origin.Publication, f.Publication, where),
			Fix:  RecoverFix,
		}
	}
	return nil
}

// Changed returns an *Error when the publication fingerprint found while
// streaming differs from the one the session started with.
func Changed(was, now string, checked pglogrepl.LSN) error {
	if was == now {
		return nil
	}
	return &Error{
		What: fmt.Sprintf("the publication or an outbox table changed while streaming (was %s, now %s): inserts after the change may never reach the slot; the slot stays confirmed no further than %s, the last position checked", was, now, checked),
		Fix:  RecoverFix,
	}
}

func (e End) where() string {
	if !e.Found {
		return fmt.Sprintf("sequence %d", e.LastSeq)
	}
	s := fmt.Sprintf("commit LSN %s, %s", e.CommitLSN, timeText(e.CommitTime))
	if e.EventID != "" {
		s += ", event " + quote(e.EventID)
	}
	return s + fmt.Sprintf(", sequence %d", e.LastSeq)
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "commit time unknown"
	}
	return "committed " + t.UTC().Format(time.RFC3339)
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
