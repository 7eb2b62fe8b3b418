package continuity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

func TestJudge(t *testing.T) {
	origin := Origin{SystemID: "7000", Database: "app", Publication: "publication p 1/2, public.outbox 3/4"}
	facts := Facts{Origin: origin, Slot: "outboxrelay", ServerLSN: 0x9000, SlotExists: true, SlotConfirmed: 0x5000}
	end := End{Stream: "OUTBOX", LastSeq: 10, CommitLSN: 0x4000, CommitTime: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC),
		EventID: "e10", Found: true, Origin: origin, HasOrigin: true}
	for _, tc := range []struct {
		name string
		f    func(*Facts, *End)
		want string // "" for no error
	}{
		{"continues", func(*Facts, *End) {}, ""},
		{"slot ahead of the stream after idle keepalives", func(f *Facts, _ *End) { f.SlotConfirmed = 0x8000 }, ""},
		{"first start: empty stream, no slot", func(f *Facts, e *End) { f.SlotExists = false; *e = End{Stream: "OUTBOX"} }, ""},
		{"empty stream from another cluster", func(f *Facts, e *End) { f.SlotExists = false; e.LastSeq, e.Found = 0, false; f.SystemID = "8000" }, ""},
		{"stream without a recorded origin", func(_ *Facts, e *End) { e.HasOrigin, e.Origin = false, Origin{} }, ""},
		{"slot missing", func(f *Facts, _ *End) { f.SlotExists = false }, `replication slot "outboxrelay" is missing, but stream "OUTBOX" holds events up to commit LSN 0/4000, committed 2026-12-05T10:00:00Z, event "e10", sequence 10`},
		{"slot missing, last message gone", func(f *Facts, e *End) { f.SlotExists = false; e.Found = false }, "holds events up to sequence 10"},
		{"slot invalidated", func(f *Facts, _ *End) { f.SlotInvalid = "wal_status = lost" }, `replication slot "outboxrelay" was invalidated by Postgres (wal_status = lost)`},
		{"another cluster", func(f *Facts, _ *End) { f.SystemID = "8000" }, "holds events from Postgres cluster 7000, and postgres.url points at cluster 8000"},
		{"another database", func(f *Facts, _ *End) { f.Database = "other" }, `holds events from database "app", and postgres.url names database "other"`},
		{"a restored backup behind the stream", func(f *Facts, _ *End) { f.ServerLSN = 0x3000 }, "ahead of the server's current WAL position 0/3000"},
		{"publication changed", func(f *Facts, _ *End) { f.Publication = "publication p 1/2, public.outbox 3/none" }, "the publication or an outbox table changed since stream"},
		{"interrupted recovery", func(_ *Facts, e *End) { e.Recovering = true }, "stopped before it had published every row"},
		{"interrupted backfill into an empty stream", func(_ *Facts, e *End) { *e = End{Stream: "OUTBOX", Recovering: true} }, "stopped before it had published every row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, e := facts, end
			tc.f(&f, &e)
			err := Judge(f, e)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Judge = %v, want nil", err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Judge = %v, want a *continuity.Error saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Judge = %q\nwant it to say %q", err, tc.want)
			}
			if ce.Fix == "" {
				t.Fatal("the error gives no fix")
			}
		})
	}
}

func TestChanged(t *testing.T) {
	if err := Changed("a", "a", 0x10); err != nil {
		t.Fatalf("Changed(same) = %v", err)
	}
	err := Changed("a", "b", pglogrepl.LSN(0x10))
	if err == nil || !strings.Contains(err.Error(), "was a, now b") || !strings.Contains(err.Error(), "no further than 0/10") || !strings.Contains(err.Error(), "outboxrelay recover") {
		t.Fatalf("Changed(a, b) = %v", err)
	}
}
