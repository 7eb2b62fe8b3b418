package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestTroubleshootUpdateIgnored (README, Troubleshooting): an UPDATE of an
// outbox row is not an event. The relay says so once, in its log, and
// publishes only the insert.
func TestTroubleshootUpdateIgnored(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	js := e.js()
	id := e.insertRow("order", "o-1", "created", `{"n": 1}`)
	e.waitStreamCount(js, 1, 30*time.Second)
	for i := 0; i < 2; i++ {
		if err := e.pg.Exec(context.Background(), "UPDATE outbox SET payload = '{\"n\": 2}' WHERE id = $1", id); err != nil {
			t.Fatal(err)
		}
	}
	const warn = `level=WARN msg="an outbox row was updated; updates are ignored, only inserts become events" table=public.outbox`
	if err := relay.WaitForOutput(warn, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Everything up to the updates is confirmed, and nothing else is stored.
	e.waitConfirmedPast(e.currentLSN(), 30*time.Second)
	if n, err := streamCount(context.Background(), js); err != nil || n != 1 {
		t.Errorf("stream holds %d messages (%v), want only the insert", n, err)
	}
	if got := strings.Count(relay.Output(), warn); got != 1 {
		t.Errorf("the relay warned %d times about the updates, want once", got)
	}
}
