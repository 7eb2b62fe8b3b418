package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestTraceContext (W3C trace context): a column mapped to the traceparent
// header is read as trace context, either a bare traceparent or Debezium's
// tracingspancontext (a java.util.Properties text, with tracestate
// escaped as Properties.store writes it). Each event carries traceparent
// and tracestate headers as W3C writes them. A malformed value is an
// invalid event: here dead-lettered in its place, with the reason; nothing
// after it is lost.
func TestTraceContext(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.pg.Exec(ctx, "ALTER TABLE outbox ADD COLUMN tracingspancontext text"); err != nil {
		t.Fatal(err)
	}
	e.writeConfig("outbox:\n  headers: {tracingspancontext: traceparent}\nerrors:\n  invalid_event: dead_letter\n")
	e.startRelay()

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	rows := []struct {
		value               any
		parent, state, dead string
	}{
		{parent, parent, "", ""},
		{"#Sat Dec 05 16:00:00 UTC 2026\ntraceparent=" + parent + "\ntracestate=rojo\\=00f067aa0ba902b7,congo\\=t61rcWkgMzE\n", parent, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", ""},
		{nil, "", "", ""}, // no trace context: no header
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "", "", `header traceparent (column "tracingspancontext"): traceparent "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01" is not W3C trace context`},
		{"traceparent=" + parent + "\n", parent, "", ""},
	}
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ids := make([]string, len(rows))
	for i, r := range rows {
		if err := conn.QueryRow(ctx, "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, tracingspancontext) VALUES ('order', 'o-1', 'created', '{}', $1) RETURNING id::text", r.value).Scan(&ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	js := e.js()
	e.waitStreamCount(js, len(rows), time.Minute)
	for i, m := range readStream(t, js) {
		r := rows[i]
		if got := m.Header.Get("Nats-Msg-Id"); got != ids[i] {
			t.Fatalf("message %d is event %s, want %s", i, got, ids[i])
		}
		if r.dead != "" {
			if m.Subject != "outbox.dead_letter" || !strings.Contains(m.Header.Get("Outbox-Error"), r.dead) {
				t.Errorf("row %d: subject %q, Outbox-Error %q; want outbox.dead_letter and %q", i, m.Subject, m.Header.Get("Outbox-Error"), r.dead)
			}
			continue
		}
		if m.Subject == "outbox.dead_letter" {
			t.Errorf("row %d dead-lettered: %s", i, m.Header.Get("Outbox-Error"))
		}
		for name, want := range map[string]string{"traceparent": r.parent, "tracestate": r.state} {
			got := m.Header[name] // exactly this name, lower case
			if (want == "" && len(got) != 0) || (want != "" && (len(got) != 1 || got[0] != want)) {
				t.Errorf("row %d: header %s = %q, want %q", i, name, got, want)
			}
		}
		if got := m.Header.Values("tracingspancontext"); len(got) != 0 {
			t.Errorf("row %d: the raw column is a header too: %q", i, got)
		}
	}
}
