package e2e_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/subject"
)

// insertRow commits one outbox row and returns its id. Values may be nil
// (NULL) once allowNulls ran.
func (e *env) insertRow(aggType, aggID, typ, payload any) string {
	e.t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var id string
	if err := conn.QueryRow(context.Background(),
		"INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4) RETURNING id::text",
		aggType, aggID, typ, payload).Scan(&id); err != nil {
		e.t.Fatalf("insert: %v", err)
	}
	return id
}

func (e *env) allowNulls() {
	e.t.Helper()
	if err := e.pg.Exec(context.Background(), "ALTER TABLE outbox ALTER aggregatetype DROP NOT NULL, ALTER aggregateid DROP NOT NULL, ALTER type DROP NOT NULL"); err != nil {
		e.t.Fatal(err)
	}
}

// TestAwkwardAggregateIDs: ids with dots, spaces, wildcards, '%', non-ASCII,
// control bytes and 1,000 characters are each escaped into one subject
// token, reversibly, and carried unchanged in the header.
func TestAwkwardAggregateIDs(t *testing.T) {
	e := newEnv(t)
	e.startRelay()
	ids := []string{"a.b", "a b", "*", ">", "a*b>c.d", "100%", "%41", "ä-ö-日本", "ctl\x01\x1b\x7f", "tab\tin",
		strings.Repeat("x", 1000), strings.Repeat("é", 500)}
	for _, id := range ids {
		e.insertRow("order", id, "created", `{"n": 1}`)
	}
	js := e.js()
	e.waitStreamCount(js, len(ids), time.Minute)
	msgs := readStream(t, js)
	for i, m := range msgs {
		id := ids[i]
		if want := "outbox.order." + subject.Escape(id); m.Subject != want {
			t.Errorf("id %q: subject %q, want %q", id, m.Subject, want)
		}
		tok := strings.TrimPrefix(m.Subject, "outbox.order.")
		if strings.ContainsAny(tok, ".*> \t") {
			t.Errorf("id %q: token %q is not a single literal subject token", id, tok)
		}
		if back, err := subject.Unescape(tok); err != nil || back != id {
			t.Errorf("id %q: Unescape(%q) = %q, %v", id, tok, back, err)
		}
		if got := m.Header.Get("Outbox-Aggregate-Id"); got != id {
			t.Errorf("id %q: header Outbox-Aggregate-Id = %q", id, got)
		}
	}
}

// TestDeadLetters: with errors.invalid_event: dead_letter, each kind of bad
// row goes to the dead-letter subject, in its place in the chain, with the
// reason and the table in its headers and its data when that fits; the
// good rows around them flow on, and nothing is lost.
func TestDeadLetters(t *testing.T) {
	e := newEnv(t)
	e.allowNulls()
	e.writeConfig("errors:\n  invalid_event: dead_letter\n")
	e.startRelay()
	big := `{"pad": "` + strings.Repeat("x", 1_500_000) + `"}` // over nats-server's 1 MiB max_payload
	rows := []struct {
		aggType, aggID, typ, payload any
		reason                       string // "" for a good row
	}{
		{"order", "o-1", "created", `{"n": 1}`, ""},
		{"order", nil, "created", `{"n": 2}`, `aggregate_id (column "aggregateid") is NULL`},
		{"order", "o-1", "", `{"n": 3}`, `type (column "type") is empty`},
		{nil, "o-1", "created", `{"n": 4}`, `aggregate_type (column "aggregatetype") is NULL`},
		{"order", "o-2", "created", `{"n": 5}`, ""},
		{"order", strings.Repeat("é", 1500), "created", `{"n": 6}`, "bytes long after escaping, over the 3900 bytes"},
		{"order", "line\r\nbreak", "created", `{"n": 7}`, "a line break, which a NATS header cannot carry"},
		{"order", "o-3", "created", big, "max_payload"},
		{"order", "o-1", "updated", `{"n": 9}`, ""},
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = e.insertRow(r.aggType, r.aggID, r.typ, r.payload)
	}
	js := e.js()
	e.waitStreamCount(js, len(rows), time.Minute)
	msgs := readStream(t, js)
	dead := 0
	for i, m := range msgs {
		r := rows[i]
		if got := m.Header.Get("Nats-Msg-Id"); got != ids[i] {
			t.Fatalf("message %d is event %s, want %s: out of order or lost", i, got, ids[i])
		}
		if r.reason == "" {
			if m.Subject == "outbox.dead_letter" || m.Header.Get("Outbox-Error") != "" {
				t.Errorf("good row %d was dead-lettered: %s", i, m.Header.Get("Outbox-Error"))
			}
			continue
		}
		dead++
		if m.Subject != "outbox.dead_letter" {
			t.Errorf("bad row %d went to %q, want outbox.dead_letter", i, m.Subject)
		}
		if got := m.Header.Get("Outbox-Error"); !strings.Contains(got, r.reason) {
			t.Errorf("bad row %d: Outbox-Error %q, want it to say %q", i, got, r.reason)
		}
		if got := m.Header.Get("Outbox-Table"); got != "public.outbox" {
			t.Errorf("bad row %d: Outbox-Table %q", i, got)
		}
		if p := r.payload.(string); p != big && !strings.Contains(string(m.Data), strings.TrimSuffix(strings.TrimPrefix(p, "{"), "}")) {
			t.Errorf("bad row %d: data %q, want the row's payload %s", i, m.Data, p)
		}
	}
	if want := fmt.Sprintf("outboxrelay_events_dead_lettered_total %d\n", dead); !strings.Contains(e.metrics(), want) {
		t.Errorf("metrics lack %q", want)
	}
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
}

// TestHaltOnInvalidEvent: by default the relay stops at a bad row. It
// publishes nothing after it, never confirms the slot past it, reports it
// on /readyz, /metrics and in the log with the fix, and keeps the slot.
// Switching to dead_letter and restarting then delivers everything, once.
func TestHaltOnInvalidEvent(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	good1 := e.insertRow("order", "o-1", "created", `{"n": 1}`)
	js := e.js()
	e.waitStreamCount(js, 1, time.Minute)
	bad := e.insertRow("order", "", "created", `{"n": 2}`)
	good2 := e.insertRow("order", "o-1", "updated", `{"n": 3}`)

	testenv.WaitFor(t, 30*time.Second, "relay not ready after the bad row", func() (bool, error) {
		ok, err := e.ready()
		return !ok && err == nil, err
	})
	if err := relay.WaitForOutput("halted", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out := relay.Output()
	for _, want := range []string{bad, `aggregate_id (column \"aggregateid\") is empty`, "errors.invalid_event: dead_letter", "pg_replication_slot_advance"} {
		if !strings.Contains(out, want) {
			t.Errorf("halt log lacks %q:\n%s", want, grepLine(out, "halted"))
		}
	}
	m := e.metrics()
	if !strings.Contains(m, "outboxrelay_halted 1\n") || !strings.Contains(m, "outboxrelay_ready 0\n") {
		t.Errorf("metrics do not report the halt:\n%s", grepLine(m, "outboxrelay_halted"))
	}
	info := regexp.MustCompile(`outboxrelay_halted_event_info\{commit_lsn="([0-9A-F/]+)",event_id="` + bad + `",fix="(?:[^"\\]|\\.)*errors.invalid_event: dead_letter(?:[^"\\]|\\.)*",reason="(?:[^"\\]|\\.)*is empty(?:[^"\\]|\\.)*",table="public.outbox",tx_seq="1"\} 1`).FindStringSubmatch(m)
	if info == nil {
		t.Fatalf("metrics do not name the halted event %s:\n%s", bad, grepLine(m, "halted_event"))
	}
	badLSN, err := pglogrepl.ParseLSN(info[1])
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // keepalives and status updates come and go
	if confirmed, _ := e.slotLSNs(); confirmed > badLSN {
		t.Fatalf("slot confirmed %s, past the halted event's commit %s", confirmed, badLSN)
	}
	if n, _ := streamCount(context.Background(), js); n != 1 {
		t.Fatalf("stream holds %d messages after the halt, want only the one before it", n)
	}

	// The documented recovery: dead-letter it and restart.
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := relay.Wait(30 * time.Second); err != nil || code != 1 {
		t.Errorf("a halted relay stopped with exit code %d (%v), want 1", code, err)
	}
	e.writeConfig("errors:\n  invalid_event: dead_letter\n")
	e.startRelay()
	e.waitStreamCount(js, 3, time.Minute)
	msgs := readStream(t, js)
	for i, want := range []string{good1, bad, good2} {
		if got := msgs[i].Header.Get("Nats-Msg-Id"); got != want {
			t.Errorf("message %d is %s, want %s", i, got, want)
		}
	}
	if msgs[1].Subject != "outbox.dead_letter" {
		t.Errorf("the bad row went to %q", msgs[1].Subject)
	}
}

// grepLine returns the lines of s that contain substr.
func grepLine(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBadOutboxMessages: message events that break the format are
// dead-lettered in their place, like bad rows: a typo in a field name, a
// missing id, and a non-transactional message.
func TestBadOutboxMessages(t *testing.T) {
	e := newEnv(t)
	e.writeConfig(messagesConfig + "errors:\n  invalid_event: dead_letter\n")
	e.startRelay()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	msgs := []struct {
		transactional bool
		content       string
		reason        string
	}{
		{true, `{"id":"m1","aggregate_type":"order","aggregate_id":"o-1","type":"created","payload":{"n":1}}`, ""},
		{true, `{"id":"m2","aggregateType":"order","aggregate_id":"o-1","type":"created"}`, `unknown field "aggregateType"`},
		{true, `{"aggregate_type":"order","aggregate_id":"o-1","type":"created"}`, "id is missing"},
		{false, `{"id":"m4","aggregate_type":"order","aggregate_id":"o-1","type":"created"}`, "transactional=false"},
		{true, `{"id":"m5","aggregate_type":"order","aggregate_id":"o-1","type":"updated","payload":{"n":2}}`, ""},
	}
	for _, m := range msgs {
		if _, err := conn.Exec(context.Background(), "SELECT pg_logical_emit_message($1, 'outbox', $2::text)", m.transactional, m.content); err != nil {
			t.Fatal(err)
		}
	}
	js := e.js()
	e.waitStreamCount(js, len(msgs), time.Minute)
	got := readStream(t, js)
	for i, m := range msgs {
		r := got[i]
		if m.reason == "" {
			if r.Subject != "outbox.order.o-1" || r.Header.Get("Outbox-Error") != "" {
				t.Errorf("message %d: subject %q, error %q; want a good event", i, r.Subject, r.Header.Get("Outbox-Error"))
			}
			continue
		}
		if r.Subject != "outbox.dead_letter" || !strings.Contains(r.Header.Get("Outbox-Error"), m.reason) {
			t.Errorf("message %d: subject %q, Outbox-Error %q; want a dead letter saying %q", i, r.Subject, r.Header.Get("Outbox-Error"), m.reason)
		}
		if r.Header.Get("Outbox-Table") != "pg_logical_emit_message(outbox)" || string(r.Data) != m.content {
			t.Errorf("message %d: Outbox-Table %q, data %q; want the message's content kept", i, r.Header.Get("Outbox-Table"), r.Data)
		}
	}
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
}
