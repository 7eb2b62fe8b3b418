package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
)

// TestCloudEvents: with nats.format: cloudevents each message carries the
// CloudEvents attributes as ce- headers, the binary mode of the CloudEvents
// NATS binding, and the CloudEvents Go SDK's NATS JetStream binding reads
// every stored message as a valid event: id, source (one per table, and
// the message events'), type, subject, time, datacontenttype (from each
// table's payload type: jsonb, bytea, text) and data. The relay's own
// headers stay.
//
// The SDK's binding (v2.16.2) does not percent-decode header values, which
// the binding specification asks of a receiver: a value the relay had to
// encode (a space, '"', '%', non-ASCII) reaches the SDK encoded. The test
// checks the exact encoding, and the decoded value, as docs/consuming.md
// tells consumers to.
func TestCloudEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.pg.Exec(ctx, `CREATE TABLE files (LIKE outbox INCLUDING ALL);
		ALTER TABLE files ALTER COLUMN payload TYPE bytea USING NULL;
		CREATE TABLE notes (LIKE outbox INCLUDING ALL);
		ALTER TABLE notes ALTER COLUMN payload TYPE text`); err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.cfgPath, relayConfig{PGURL: e.pg.URL(), NATSURL: e.natsURL, HTTP: e.httpAddr,
		NATS: "  format: cloudevents\n",
		Extra: `outbox:
  tables: [{table: outbox}, {table: files}, {table: notes}]
  messages: {prefix: outbox}
`}.yaml())
	e.startRelay()

	type row struct {
		table, aggID, typ string
		payload           any    // as inserted
		source, ctype     string // the attributes, decoded
		data              []byte // the data; JSON compared as values
		encoded           map[string]string
	}
	rows := []row{
		{table: "outbox", aggID: "o-1", typ: "OrderPlaced", payload: `{"n": 1}`,
			source: "/postgres/postgres/public.outbox", ctype: "application/json", data: []byte(`{"n": 1}`)},
		{table: "outbox", aggID: `ägg 1% "q"`, typ: "Order Shipped", payload: `{"n": 2, "note": "ü"}`,
			source: "/postgres/postgres/public.outbox", ctype: "application/json", data: []byte(`{"n": 2, "note": "ü"}`),
			// The binding's percent-encoding, exactly.
			encoded: map[string]string{"subject": "%C3%A4gg%201%25%20%22q%22", "type": "Order%20Shipped"}},
		{table: "files", aggID: "f-1", typ: "FileStored", payload: []byte{0, 0xff, '\n', 0x80},
			source: "/postgres/postgres/public.files", ctype: "application/octet-stream", data: []byte{0, 0xff, '\n', 0x80}},
		{table: "notes", aggID: "n-1", typ: "NoteWritten", payload: "héllo wörld",
			source: "/postgres/postgres/public.notes", ctype: "text/plain; charset=utf-8", data: []byte("héllo wörld"),
			encoded: map[string]string{"datacontenttype": "text/plain;%20charset=utf-8"}},
		{table: "", aggID: "m-1", typ: "OrderNoted", payload: `{"n": 5}`,
			source: "/postgres/postgres/pg_logical_emit_message/outbox", ctype: "application/json", data: []byte(`{"n": 5}`)},
	}
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ids := make([]string, len(rows))
	for i, r := range rows {
		if r.table == "" {
			ids[i] = "msg-1"
			_, err = conn.Exec(ctx, `SELECT pg_logical_emit_message(true, 'outbox', json_build_object('id', $1::text,
				'aggregate_type', 'order', 'aggregate_id', $2::text, 'type', $3::text, 'payload', $4::json)::text)`, ids[i], r.aggID, r.typ, r.payload)
		} else {
			err = conn.QueryRow(ctx, "INSERT INTO "+r.table+" (aggregatetype, aggregateid, type, payload) VALUES ('order', $1, $2, $3) RETURNING id::text",
				r.aggID, r.typ, r.payload).Scan(&ids[i])
		}
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
	}
	js := e.js()
	e.waitStreamCount(js, len(rows), time.Minute)
	for i, m := range readStream(t, js) {
		r := rows[i]
		ev, err := binding.ToEvent(ctx, cejs.NewMessage(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data}))
		if err != nil {
			t.Fatalf("message %d: the CloudEvents SDK cannot read it: %v\nheaders %v", i, err, m.Header)
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("message %d: not a valid CloudEvent: %v", i, err)
		}
		for _, c := range []struct{ attr, got, want string }{
			{"specversion", ev.SpecVersion(), "1.0"},
			{"id", ev.ID(), ids[i]},
			{"source", ev.Source(), r.source},
			{"type", ev.Type(), r.typ},
			{"subject", ev.Subject(), r.aggID},
			{"datacontenttype", ev.DataContentType(), r.ctype},
		} {
			if enc, ok := r.encoded[c.attr]; ok && c.got != enc {
				t.Errorf("message %d: %s as received = %q, want it percent-encoded as %q", i, c.attr, c.got, enc)
			}
			if got, err := url.PathUnescape(c.got); err != nil || got != c.want {
				t.Errorf("message %d: %s = %q (decoded %q, %v), want %q", i, c.attr, c.got, got, err, c.want)
			}
		}
		commit, err := time.Parse(time.RFC3339Nano, m.Header.Get("Outbox-Commit-Time"))
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Time().Equal(commit) || time.Since(commit).Abs() > 5*time.Minute {
			t.Errorf("message %d: time = %s, want the commit time %s (within minutes of now)", i, ev.Time(), commit)
		}
		if !sameData(ev.Data(), r.data, r.ctype) || !bytes.Equal(ev.Data(), m.Data) {
			t.Errorf("message %d: data = %q, want %q, the message's body", i, ev.Data(), r.data)
		}
		if m.Header.Get("Nats-Msg-Id") != ids[i] || m.Header.Get("Outbox-Aggregate-Id") != r.aggID {
			t.Errorf("message %d: the relay's own headers changed: %v", i, m.Header)
		}
	}
}

// sameData compares JSON as values (jsonb and json_build_object format
// their text their own way), anything else byte for byte.
func sameData(got, want []byte, ctype string) bool {
	if ctype != "application/json" {
		return bytes.Equal(got, want)
	}
	var g, w any
	return json.Unmarshal(got, &g) == nil && json.Unmarshal(want, &w) == nil && reflect.DeepEqual(g, w)
}
