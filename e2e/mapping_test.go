package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// insertInto commits one outbox row with the aggregate id in column aggCol
// and returns its id.
func (e *env) insertInto(aggCol, aggID, typ string) string {
	e.t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var id string
	q := fmt.Sprintf("INSERT INTO outbox (aggregatetype, %s, type, payload) VALUES ('order', $1, $2, $3) RETURNING id::text", aggCol)
	if err := conn.QueryRow(context.Background(), q, aggID, typ, `{"t": "`+typ+`"}`).Scan(&id); err != nil {
		e.t.Fatalf("insert: %v", err)
	}
	return id
}

func (e *env) readyzText() string {
	e.t.Helper()
	resp, err := http.Get("http://" + e.httpAddr + "/readyz")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestMappedColumnRenamed: a mapped column renamed, rows written, the column
// renamed back, more rows. By default the relay halts at the first row
// written while the column was missing, and the halt names its id and
// commit LSN and says why. The documented way forward, dead_letter and a
// restart, dead-letters the rows in between with the reason, in their place,
// and publishes the rows after the rename back: none lost, none twice.
func TestMappedColumnRenamed(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	js := e.js()
	before := e.insertInto("aggregateid", "o-1", "created")
	e.waitStreamCount(js, 1, time.Minute)

	if err := e.pg.Exec(context.Background(), "ALTER TABLE outbox RENAME COLUMN aggregateid TO agg"); err != nil {
		t.Fatal(err)
	}
	var between []string
	for i := range 3 {
		between = append(between, e.insertInto("agg", fmt.Sprintf("o-%d", i+2), "paid"))
	}
	if err := e.pg.Exec(context.Background(), "ALTER TABLE outbox RENAME COLUMN agg TO aggregateid"); err != nil {
		t.Fatal(err)
	}
	after := []string{e.insertInto("aggregateid", "o-5", "shipped"), e.insertInto("aggregateid", "o-6", "shipped")}

	// The halt: at the first row in between, on /readyz and in the log.
	const reason = `outbox table public.outbox has no column "aggregateid" (outbox.columns.aggregate_id), as the table was when this row was written (renamed or dropped?`
	var readyz string
	testenv.WaitFor(t, 30*time.Second, "a halt on /readyz", func() (bool, error) {
		readyz = e.readyzText()
		return strings.HasPrefix(readyz, "halted: "), fmt.Errorf("/readyz says %q", readyz)
	})
	m := regexp.MustCompile(`^halted: event "([^"]*)" \(table public.outbox, commit LSN ([0-9A-F]+/[0-9A-F]+), position 1 in its transaction\) cannot be published: (.*); fix: (.*)`).FindStringSubmatch(readyz)
	if m == nil {
		t.Fatalf("/readyz does not name the event: %q", readyz)
	}
	haltID, haltLSN := m[1], m[2]
	if haltID != between[0] || !strings.HasPrefix(m[3], reason) || !strings.Contains(m[4], "renaming the column back does not change") {
		t.Errorf("halted at %s with %q, fix %q; want %s, %q and the misfit's fix", haltID, m[3], m[4], between[0], reason)
	}
	if err := relay.WaitForOutput("halted: publishing stopped", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if line := grepLine(relay.Output(), "halted: publishing stopped"); !strings.Contains(line, "event_id="+haltID) || !strings.Contains(line, "lsn="+haltLSN) {
		t.Errorf("halt log line does not name event %s at %s:\n%s", haltID, haltLSN, line)
	}
	if n, _ := streamCount(context.Background(), js); n != 1 {
		t.Fatalf("stream holds %d messages after the halt, want only the one before it", n)
	}

	// The way forward: dead_letter and a restart.
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := relay.Wait(30 * time.Second); err != nil || code != 1 {
		t.Errorf("a halted relay stopped with exit code %d (%v), want 1", code, err)
	}
	e.writeConfig("errors:\n  invalid_event: dead_letter\n")
	e.startRelay()
	want := append(append([]string{before}, between...), after...)
	e.waitStreamCount(js, len(want), time.Minute)
	msgs := readStream(t, js)
	for i, id := range want {
		got := msgs[i]
		if got.Header.Get("Nats-Msg-Id") != id {
			t.Fatalf("message %d is event %q, want %s: lost, repeated or out of order", i, got.Header.Get("Nats-Msg-Id"), id)
		}
		dead := i >= 1 && i <= len(between)
		switch {
		case dead && (got.Subject != "outbox.dead_letter" || !strings.HasPrefix(got.Header.Get("Outbox-Error"), reason)):
			t.Errorf("row %s written while the column was renamed: subject %q, Outbox-Error %q; want a dead letter saying %q",
				id, got.Subject, got.Header.Get("Outbox-Error"), reason)
		case dead && string(got.Data) != `{"t": "paid"}`:
			t.Errorf("dead letter %s carries %q, want the row's payload", id, got.Data)
		case !dead && (got.Subject == "outbox.dead_letter" || got.Header.Get("Outbox-Error") != ""):
			t.Errorf("row %s was dead-lettered: %s", id, got.Header.Get("Outbox-Error"))
		}
	}
	if got := msgs[1].Header.Get("Outbox-Commit-LSN"); got != haltLSN {
		t.Errorf("the halt named commit LSN %s, the event's is %s", haltLSN, got)
	}
	if got := msgs[len(want)-1].Subject; got != "outbox.order.o-6" {
		t.Errorf("the last row after the rename back went to %q, want outbox.order.o-6", got)
	}
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
}
