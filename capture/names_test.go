package capture_test

import (
	"context"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/capture"
)

// TestPublicationNamesPgoutputWouldFold: pgoutput reads publication_names
// as a list of SQL identifiers, so unquoted it would fold "MyPub" to mypub
// and split a name with a comma in two; the capture quotes the name, so a
// publication of any name streams its rows.
func TestPublicationNamesPgoutputWouldFold(t *testing.T) {
	e := newEnv(t, nil)
	for i, pub := range []string{"MyPub", `Outbox Events, v2 "eu"`} {
		c, stop := e.run(capture.Config{Slot: "names_" + string(rune('a'+i)), Publication: pub}, &watermark{})
		started(t, c)
		e.insert(2)
		if got := strings.ReplaceAll(types(txs(t, c, 1)), "R", ""); got != "BIIC" {
			t.Errorf("publication %q streamed %q, want the insert (BIIC)", pub, got)
		}
		stop()
		var n int
		if err := e.conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_publication WHERE pubname = $1", pub).Scan(&n); err != nil || n != 1 {
			t.Errorf("publication %q: %d with that exact name (%v), want the one the relay created", pub, n, err)
		}
	}
}
