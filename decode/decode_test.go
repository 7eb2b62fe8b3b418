package decode_test

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outboxrelay/decode"
)

var debezium = decode.Table{Schema: "public", Name: "outbox"}

// decodeAll decodes msgs in order and fails the test on the first error.
func decodeAll(t *testing.T, d *decode.Decoder, msgs ...[]byte) []decode.Result {
	t.Helper()
	var out []decode.Result
	for i, m := range msgs {
		res, err := d.Decode(m)
		if err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
		out = append(out, res)
	}
	return out
}

// decodeRow decodes one outbox insert in a fresh transaction of a fresh
// decoder and returns its event.
func decodeRow(t *testing.T, table decode.Table, rel, insert []byte) decode.Event {
	t.Helper()
	d := decode.NewDecoder(table)
	res := decodeAll(t, d, rel, beginMsg(0x100, time.Unix(0, 0), 7), insert)
	if got := res[2].Kind; got != decode.KindEvent {
		t.Fatalf("insert decoded to %v, want event", got)
	}
	return *res[2].Event
}

func TestTransaction(t *testing.T) {
	commit := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	const lsn, end, xid = 0x16B3748, 0x16B3790, 771
	d := decode.NewDecoder(debezium)
	res := decodeAll(t, d,
		debeziumRelation(),
		beginMsg(lsn, commit, xid),
		debeziumRow("e1", "order", "42", "created", `{"n":1}`),
		debeziumRow("e2", "order", "42", "paid", `{"n":2}`),
		debeziumRow("e3", "customer", "7", "moved", `{"n":3}`),
		commitMsg(lsn, end, commit),
	)

	wantKinds := []decode.Kind{decode.KindRelation, decode.KindBegin, decode.KindEvent,
		decode.KindEvent, decode.KindEvent, decode.KindCommit}
	for i, want := range wantKinds {
		if got := res[i].Kind; got != want {
			t.Errorf("result %d kind = %v, want %v", i, got, want)
		}
	}
	if got := res[0].Table; got != "public.outbox" {
		t.Errorf("relation table = %q, want public.outbox", got)
	}
	begin := res[1]
	if begin.CommitLSN != lsn || !begin.CommitTime.Equal(commit) || begin.Xid != xid {
		t.Errorf("begin = %v %v %v, want %v %v %v", begin.CommitLSN, begin.CommitTime, begin.Xid,
			pglogrepl.LSN(lsn), commit, xid)
	}

	want := []decode.Event{
		{ID: "e1", AggregateType: "order", AggregateID: "42", Type: "created", Payload: []byte(`{"n":1}`), TxSeq: 1},
		{ID: "e2", AggregateType: "order", AggregateID: "42", Type: "paid", Payload: []byte(`{"n":2}`), TxSeq: 2},
		{ID: "e3", AggregateType: "customer", AggregateID: "7", Type: "moved", Payload: []byte(`{"n":3}`), TxSeq: 3},
	}
	for i := range want {
		want[i].CommitLSN, want[i].CommitTime, want[i].Xid, want[i].Table = lsn, commit, xid, "public.outbox"
		want[i].ContentType = decode.ContentJSON // a jsonb payload column
		got := *res[2+i].Event
		if got.CommitTime.Location() != time.UTC {
			t.Errorf("event %d time zone = %v, want UTC", i, got.CommitTime.Location())
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}

	c := res[5]
	if c.CommitLSN != lsn || c.EndLSN != end || !c.CommitTime.Equal(commit) || c.Xid != xid || c.Events != 3 {
		t.Errorf("commit = lsn %v end %v time %v xid %d events %d, want %v %v %v %d 3",
			c.CommitLSN, c.EndLSN, c.CommitTime, c.Xid, c.Events, pglogrepl.LSN(lsn), pglogrepl.LSN(end), commit, xid)
	}

	// The next transaction numbers its events from 1 again.
	res = decodeAll(t, d, beginMsg(lsn+0x100, commit, xid+1), debeziumRow("e4", "a", "b", "c", "{}"))
	if got := res[1].Event.TxSeq; got != 1 {
		t.Errorf("first event of the next transaction has TxSeq %d, want 1", got)
	}
}

func TestPgEpoch(t *testing.T) {
	for _, tc := range []struct {
		micros uint64
		want   time.Time
	}{
		{0, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{1, time.Date(2000, 1, 1, 0, 0, 0, 1000, time.UTC)},
		// 2024-01-01 is 8766 days after the Postgres epoch.
		{8766 * 86400 * 1e6, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		d := decode.NewDecoder()
		res, err := d.Decode(wire{'B'}.U64(1).U64(tc.micros).U32(1))
		if err != nil {
			t.Fatal(err)
		}
		if !res.CommitTime.Equal(tc.want) {
			t.Errorf("%d µs after the epoch = %v, want %v", tc.micros, res.CommitTime, tc.want)
		}
	}
}

func TestDebeziumDefaults(t *testing.T) {
	payload := `{"orderId":"42","lines":[{"sku":"A-1","qty":2}]}`
	ins := debeziumRow("5d2c1f0e-7a4b-4c1e-9f3a-0b1c2d3e4f50", "order", "42", "OrderCreated", payload)
	// Only the table name configured: the columns default to Debezium's.
	ev := decodeRow(t, decode.Table{Name: "outbox"}, debeziumRelation(), ins)

	if ev.Invalid != "" {
		t.Fatalf("Invalid = %q, want valid", ev.Invalid)
	}
	if got, want := ev.ID, "5d2c1f0e-7a4b-4c1e-9f3a-0b1c2d3e4f50"; got != want {
		t.Errorf("ID = %q, want %q", got, want)
	}
	if ev.AggregateType != "order" || ev.AggregateID != "42" || ev.Type != "OrderCreated" {
		t.Errorf("aggregate type, id, type = %q %q %q, want order 42 OrderCreated", ev.AggregateType, ev.AggregateID, ev.Type)
	}
	if string(ev.Payload) != payload {
		t.Errorf("Payload = %s, want %s", ev.Payload, payload)
	}
	if ev.Headers != nil {
		t.Errorf("Headers = %v, want nil when none are configured", ev.Headers)
	}
	// The payload is not copied: it points into the message.
	start := uintptr(unsafe.Pointer(unsafe.SliceData(ins)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(ev.Payload)))
	if p < start || p >= start+uintptr(len(ins)) {
		t.Errorf("Payload was copied; want it to alias the message")
	}
}

func TestCustomColumnsAndHeaders(t *testing.T) {
	table := decode.Table{
		Schema: "events",
		Name:   "outgoing",
		Columns: decode.Columns{
			ID: "event_id", AggregateType: "kind", AggregateID: "key", Type: "event_type", Payload: "body",
		},
		Headers: []decode.HeaderColumn{
			{Column: "tracingspancontext", Header: "Trace-Context"},
			{Column: "tenant", Header: "Tenant"},
			{Column: "source", Header: "Source"},
		},
	}
	rel := relationMsg(99, "events", "outgoing",
		col{"tenant", oidText}, col{"body", oidJSON}, col{"event_id", oidInt8}, col{"created_at", 1184},
		col{"key", oidUUID}, col{"kind", oidText}, col{"tracingspancontext", oidText},
		col{"event_type", oidText}, col{"source", oidText})
	ins := insertMsg(99, txt("acme"), txt(`{"a":1}`), txt("1001"), txt("2024-01-01 00:00:00+00"),
		txt("0b1c2d3e-0000-4000-8000-000000000001"), txt("invoice"), null, txt("issued"), txt("billing"))
	got := decodeRow(t, table, rel, ins)

	want := decode.Event{
		ID: "1001", AggregateType: "invoice", AggregateID: "0b1c2d3e-0000-4000-8000-000000000001",
		Type: "issued", Payload: []byte(`{"a":1}`), ContentType: decode.ContentJSON,
		// The NULL tracingspancontext is left out; the others keep the
		// configured order, not the table's.
		Headers:   []decode.Header{{Name: "Tenant", Value: "acme"}, {Name: "Source", Value: "billing"}},
		CommitLSN: 0x100, TxSeq: 1, CommitTime: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), Xid: 7,
		Table: "events.outgoing",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event:\n got %+v\nwant %+v", got, want)
	}
}

func TestPgCatalogNamespace(t *testing.T) {
	// pgoutput sends an empty namespace for pg_catalog.
	table := decode.Table{Schema: "pg_catalog", Name: "outbox"}
	ev := decodeRow(t, table, relationMsg(outboxRelid, "", "outbox", debeziumCols...),
		debeziumRow("1", "a", "b", "c", "{}"))
	if ev.Table != "pg_catalog.outbox" {
		t.Errorf("Table = %q, want pg_catalog.outbox", ev.Table)
	}
}

// TestMissingColumn: a relation without a configured column does not stop
// the decoder; each insert into it is an invalid event that says which
// column is missing and keeps what it can read, so the invalid_event policy
// applies and the halt can name the event.
func TestMissingColumn(t *testing.T) {
	const cols = "(renamed or dropped? its columns were: id, aggregatetype, agg, type, payload)"
	for _, tc := range []struct {
		name   string
		table  decode.Table
		rename int // index into debeziumCols of the column renamed to "agg"
		want   decode.Event
		reason string
	}{
		{"aggregate id", debezium, 2,
			decode.Event{ID: "e1", AggregateType: "order", Type: "created", Payload: []byte(`{"n":1}`)},
			`outbox table public.outbox has no column "aggregateid" (outbox.columns.aggregate_id), as the table was when this row was written ` + cols},
		{"id", debezium, 0,
			decode.Event{AggregateType: "order", AggregateID: "42", Type: "created", Payload: []byte(`{"n":1}`)},
			`outbox table public.outbox has no column "id" (outbox.columns.id), as the table was when this row was written ` +
				"(renamed or dropped? its columns were: agg, aggregatetype, aggregateid, type, payload)"},
		{"custom payload", decode.Table{Name: "outbox", Columns: decode.Columns{Payload: "body"}}, 4,
			decode.Event{ID: "e1", AggregateType: "order", AggregateID: "42", Type: "created"},
			`outbox table public.outbox has no column "body" (outbox.columns.payload), as the table was when this row was written ` +
				"(renamed or dropped? its columns were: id, aggregatetype, aggregateid, type, agg)"},
		{"header and type", decode.Table{Name: "outbox", Headers: []decode.HeaderColumn{{Column: "trace", Header: "Trace"}}}, 3,
			decode.Event{ID: "e1", AggregateType: "order", AggregateID: "42", Payload: []byte(`{"n":1}`), Headers: []decode.Header{}},
			`outbox table public.outbox has no column "type" (outbox.columns.type); outbox table public.outbox has no column "trace" (outbox.headers.trace), ` +
				"as the table was when this row was written (renamed or dropped? its columns were: id, aggregatetype, aggregateid, agg, payload)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decode.NewDecoder(tc.table)
			cols := append([]col(nil), debeziumCols...)
			cols[tc.rename].name = "agg"
			res := decodeAll(t, d,
				relationMsg(outboxRelid, "public", "outbox", cols...),
				beginMsg(0x500, time.Unix(3, 0), 9),
				debeziumRow("x", "y", "z", "w", "v"), // another event first, so TxSeq is 2 below
				debeziumRow("e1", "order", "42", "created", `{"n":1}`))
			if res[0].Kind != decode.KindRelation || res[0].Misfit != tc.reason {
				t.Errorf("relation: kind %v, Misfit %q\nwant relation, %q", res[0].Kind, res[0].Misfit, tc.reason)
			}
			if res[3].Kind != decode.KindEvent || res[3].Misfit != tc.reason {
				t.Errorf("insert: kind %v, Misfit %q; want an event with the relation's Misfit", res[3].Kind, res[3].Misfit)
			}
			want := tc.want
			want.Invalid = tc.reason
			want.CommitLSN, want.TxSeq, want.CommitTime, want.Xid, want.Table = 0x500, 2, time.Unix(3, 0).UTC(), 9, "public.outbox"
			if tc.want.Payload != nil {
				want.ContentType = decode.ContentJSON // a jsonb payload column; none when it is missing
			}
			if got := *res[3].Event; !reflect.DeepEqual(got, want) {
				t.Errorf("event:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestRelationResent: a re-sent relation replaces the layout for the rows
// after it: a reordered table is read by name, a table that lost a
// configured column makes invalid events, and one that has it again makes
// good events again.
func TestRelationResent(t *testing.T) {
	d := decode.NewDecoder(debezium)
	res := decodeAll(t, d,
		debeziumRelation(),
		beginMsg(0x200, time.Unix(1, 0), 1),
		debeziumRow("e1", "order", "1", "created", "{}"),
		// ALTER TABLE: a column added in front, the others reordered.
		relationMsg(outboxRelid, "public", "outbox", col{"tenant", oidText}, col{"payload", oidJSON},
			col{"type", oidText}, col{"aggregateid", oidText}, col{"aggregatetype", oidText}, col{"id", oidUUID}),
		insertMsg(outboxRelid, txt("acme"), txt(`{"v":2}`), txt("paid"), txt("1"), txt("order"), txt("e2")),
		commitMsg(0x200, 0x280, time.Unix(1, 0)),
	)
	got := res[4].Event
	if got.ID != "e2" || got.AggregateType != "order" || got.AggregateID != "1" || got.Type != "paid" ||
		string(got.Payload) != `{"v":2}` || got.TxSeq != 2 || got.Invalid != "" {
		t.Errorf("event after the new layout = %+v, want e2 order 1 paid {\"v\":2} TxSeq 2", got)
	}

	// The payload column renamed, then renamed back. The old layout is
	// not used for the rows in between: they would be read wrong.
	renamed := append([]col(nil), debeziumCols...)
	renamed[4].name = "body"
	res = decodeAll(t, d,
		relationMsg(outboxRelid, "public", "outbox", renamed...),
		beginMsg(0x300, time.Unix(2, 0), 2),
		debeziumRow("e3", "order", "1", "x", `{"v":3}`),
		commitMsg(0x300, 0x380, time.Unix(2, 0)),
		debeziumRelation(),
		beginMsg(0x400, time.Unix(3, 0), 3),
		debeziumRow("e4", "order", "1", "y", `{"v":4}`),
		commitMsg(0x400, 0x480, time.Unix(3, 0)),
	)
	if res[0].Misfit == "" {
		t.Error("relation without the payload column: no Misfit")
	}
	if ev := res[2].Event; ev.ID != "e3" || ev.Payload != nil || !strings.HasPrefix(ev.Invalid, `outbox table public.outbox has no column "payload"`) {
		t.Errorf("row without the payload column: id %q, payload %q, Invalid %q; want e3, none, the missing column", ev.ID, ev.Payload, ev.Invalid)
	}
	if res[4].Misfit != "" || res[5].Kind != decode.KindBegin {
		t.Errorf("relation renamed back: Misfit %q", res[4].Misfit)
	}
	if ev := res[6].Event; ev.ID != "e4" || string(ev.Payload) != `{"v":4}` || ev.Invalid != "" || res[6].Misfit != "" {
		t.Errorf("row after the rename back: %+v; want e4 with its payload, valid", ev)
	}
}

func TestOtherRelationIgnored(t *testing.T) {
	d := decode.NewDecoder(debezium)
	res := decodeAll(t, d,
		debeziumRelation(),
		relationMsg(500, "public", "orders", col{"id", oidInt4}, col{"total", oidText}),
		// Same name, other schema: not the outbox either.
		relationMsg(501, "audit", "outbox", debeziumCols...),
		beginMsg(0x100, time.Unix(0, 0), 1),
		insertMsg(500, txt("1"), txt("9.99")),
		debeziumRow("e1", "order", "1", "created", "{}"),
		insertMsg(501, txt("x"), txt("a"), txt("b"), txt("c"), txt("{}")),
		updateMsg(500, 0, nil, []val{txt("1"), txt("10")}),
		deleteMsg(500, 'K', txt("1"), null),
	)
	for _, i := range []int{4, 6, 7, 8} {
		if res[i].Kind != decode.KindNone {
			t.Errorf("result %d kind = %v, want none", i, res[i].Kind)
		}
	}
	if got := res[4].Table; got != "public.orders" {
		t.Errorf("ignored insert table = %q, want public.orders", got)
	}
	if got := res[5].Event.TxSeq; got != 1 {
		t.Errorf("outbox event TxSeq = %d, want 1: other tables must not count", got)
	}
}

func TestChangesToOutbox(t *testing.T) {
	row := []val{txt("e1"), txt("order"), txt("1"), txt("created"), txt("{}")}
	key := []val{txt("e1"), null, null, null, null}
	for _, tc := range []struct {
		msg  []byte
		want string
	}{
		{updateMsg(outboxRelid, 0, nil, row), "update"},
		{updateMsg(outboxRelid, 'K', key, row), "update"},
		{updateMsg(outboxRelid, 'O', row, row), "update"},
		{deleteMsg(outboxRelid, 'K', key...), "delete"},
		{deleteMsg(outboxRelid, 'O', row...), "delete"},
		{truncateMsg(outboxRelid), "truncate"},
		{truncateMsg(500, outboxRelid), "truncate"},
	} {
		d := decode.NewDecoder(debezium)
		res := decodeAll(t, d, debeziumRelation(), relationMsg(500, "public", "orders", col{"id", oidInt4}),
			beginMsg(0x100, time.Unix(0, 0), 1), tc.msg)
		got := res[3]
		if got.Kind != decode.KindChange || got.Change != tc.want || got.Table != "public.outbox" {
			t.Errorf("%q message: got %v %q %q, want change %q public.outbox", tc.msg[0], got.Kind, got.Change, got.Table, tc.want)
		}
	}
}

func TestInsertThenDelete(t *testing.T) {
	// The recommended cleanup: insert and delete the row in one
	// transaction. The insert must still become an event.
	d := decode.NewDecoder(debezium)
	res := decodeAll(t, d,
		debeziumRelation(),
		beginMsg(0x100, time.Unix(0, 0), 1),
		debeziumRow("e1", "order", "1", "created", `{"x":1}`),
		deleteMsg(outboxRelid, 'K', txt("e1"), null, null, null, null),
		commitMsg(0x100, 0x140, time.Unix(0, 0)),
	)
	if ev := res[2].Event; res[2].Kind != decode.KindEvent || ev.ID != "e1" || string(ev.Payload) != `{"x":1}` {
		t.Errorf("insert = %v %+v, want event e1", res[2].Kind, ev)
	}
	if res[3].Kind != decode.KindChange || res[3].Change != "delete" {
		t.Errorf("delete = %v %q, want change delete", res[3].Kind, res[3].Change)
	}
	if res[4].Events != 1 {
		t.Errorf("commit Events = %d, want 1", res[4].Events)
	}
}

func TestMessage(t *testing.T) {
	d := decode.NewDecoder(debezium)
	res := decodeAll(t, d,
		messageMsg(false, 0x50, "outbox", []byte("hello\x00world")),
		beginMsg(0x100, time.Unix(0, 0), 1),
		messageMsg(true, 0x60, "app.v1", nil),
		originMsg(0x10, "node_a"),
		typeMsg(16500, "public", "money_amount"),
	)
	want := []decode.Message{
		{Transactional: false, LSN: 0x50, Prefix: "outbox", Content: []byte("hello\x00world")},
		{},
		{Transactional: true, LSN: 0x60, Prefix: "app.v1", Content: []byte{}},
	}
	for _, i := range []int{0, 2} {
		if res[i].Kind != decode.KindMessage {
			t.Errorf("result %d kind = %v, want message", i, res[i].Kind)
		}
		if got := res[i].Message; !reflect.DeepEqual(got, want[i]) {
			t.Errorf("message %d = %+v, want %+v", i, got, want[i])
		}
	}
	for _, i := range []int{3, 4} {
		if res[i].Kind != decode.KindNone {
			t.Errorf("result %d kind = %v, want none", i, res[i].Kind)
		}
	}
}

func TestKindString(t *testing.T) {
	if got := decode.KindChange.String(); got != "change" {
		t.Errorf("KindChange.String() = %q, want change", got)
	}
	if got := decode.Kind(200).String(); got != "Kind(200)" {
		t.Errorf("Kind(200).String() = %q", got)
	}
}
