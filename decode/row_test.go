package decode_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/decode"
)

func TestPayloadTypes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		oid     uint32
		value   val
		want    []byte
		invalid string // substring of Invalid; empty for a valid event
	}{
		{"json", oidJSON, txt(`{"a": 1}`), []byte(`{"a": 1}`), ""},
		{"jsonb", oidJSONB, txt(`{"a": 1}`), []byte(`{"a": 1}`), ""},
		{"text", oidText, txt("plain text\n"), []byte("plain text\n"), ""},
		{"varchar", oidVarchar, txt("v"), []byte("v"), ""},
		{"bpchar keeps its padding", oidBpchar, txt("ab   "), []byte("ab   "), ""},
		{"name", oidName, txt("n"), []byte("n"), ""},
		{"bytea hex", oidBytea, txt(`\x00ff7b0a`), []byte{0x00, 0xff, 0x7b, 0x0a}, ""},
		{"bytea hex upper case", oidBytea, txt(`\xDEADbeef`), []byte{0xde, 0xad, 0xbe, 0xef}, ""},
		{"bytea empty", oidBytea, txt(`\x`), []byte{}, ""},
		{"bytea escape", oidBytea, txt(`a\\b\000\377c`), []byte("a\\b\x00\xffc"), ""},
		{"null payload", oidJSONB, null, nil, ""},
		{"empty payload", oidText, txt(""), []byte{}, ""},
		{"bytea bad hex", oidBytea, txt(`\x0g`), []byte(`\x0g`), `payload (column "payload") is not valid bytea text`},
		{"bytea odd hex", oidBytea, txt(`\x012`), []byte(`\x012`), "odd number of hex digits"},
		{"bytea bad escape", oidBytea, txt(`a\9`), []byte(`a\9`), "bad escape at byte 1"},
		{"bytea short escape", oidBytea, txt(`\12`), []byte(`\12`), "bad escape"},
		{"int4", oidInt4, txt("42"), []byte("42"),
			`payload (column "payload") has type OID 23; supported payload types are json, jsonb, text, varchar, char, name and bytea`},
		{"unchanged toast", oidJSONB, val{Kind: 'u'}, nil, `payload (column "payload") is an unchanged TOAST value`},
		{"binary", oidJSONB, val{Kind: 'b', Data: "\x01{}"}, nil, `payload (column "payload") arrived in binary format`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cols := append([]col(nil), debeziumCols...)
			cols[4].oid = tc.oid
			rel := relationMsg(outboxRelid, "public", "outbox", cols...)
			ins := insertMsg(outboxRelid, txt("e1"), txt("order"), txt("1"), txt("created"), tc.value)
			ev := decodeRow(t, debezium, rel, ins)

			if !bytes.Equal(ev.Payload, tc.want) || (ev.Payload == nil) != (tc.want == nil) {
				t.Errorf("Payload = %q, want %q", ev.Payload, tc.want)
			}
			switch {
			case tc.invalid == "" && ev.Invalid != "":
				t.Errorf("Invalid = %q, want valid", ev.Invalid)
			case !strings.Contains(ev.Invalid, tc.invalid):
				t.Errorf("Invalid = %q, want it to contain %q", ev.Invalid, tc.invalid)
			}
		})
	}
}

func TestRequiredFields(t *testing.T) {
	table := decode.Table{Name: "outbox", Columns: decode.Columns{AggregateID: "agg_id"}}
	cols := append([]col(nil), debeziumCols...)
	cols[2].name = "agg_id"
	rel := relationMsg(outboxRelid, "public", "outbox", cols...)
	fields := []string{`id (column "id")`, `aggregate_type (column "aggregatetype")`,
		`aggregate_id (column "agg_id")`, `type (column "type")`}

	for i, field := range fields {
		for _, tc := range []struct {
			v    val
			want string
		}{
			{null, field + " is NULL"},
			{txt(""), field + " is empty"},
			{val{Kind: 'u'}, field + " is an unchanged TOAST value, which an insert cannot carry"},
			{val{Kind: 'b', Data: "\x00\x01"}, field + " arrived in binary format; the relay reads text format only"},
		} {
			vals := []val{txt("e1"), txt("order"), txt("1"), txt("created"), txt("{}")}
			vals[i] = tc.v
			ev := decodeRow(t, table, rel, insertMsg(outboxRelid, vals...))
			if ev.Invalid != tc.want {
				t.Errorf("Invalid = %q, want %q", ev.Invalid, tc.want)
			}
			// The rest of the event is still there for a dead letter.
			if string(ev.Payload) != "{}" || ev.TxSeq != 1 || ev.Table != "public.outbox" {
				t.Errorf("invalid event lost its data: %+v", ev)
			}
		}
	}

	// Every problem is reported, not just the first.
	ev := decodeRow(t, table, rel, insertMsg(outboxRelid, txt("e1"), null, txt(""), txt("t"), val{Kind: 'u'}))
	want := `aggregate_type (column "aggregatetype") is NULL; aggregate_id (column "agg_id") is empty; ` +
		`payload (column "payload") is an unchanged TOAST value, which an insert cannot carry`
	if ev.Invalid != want {
		t.Errorf("Invalid = %q, want %q", ev.Invalid, want)
	}
}

func TestAnyTypeForRequiredFields(t *testing.T) {
	// id, aggregate id and the others are used as their text form, whatever
	// their type.
	cols := []col{{"id", oidInt8}, {"aggregatetype", oidBpchar}, {"aggregateid", oidUUID},
		{"type", oidName}, {"payload", oidJSONB}}
	rel := relationMsg(outboxRelid, "public", "outbox", cols...)
	ev := decodeRow(t, debezium, rel, debeziumRow("9223372036854775807", "order ", "0b1c2d3e-0000-4000-8000-000000000001", "t", "{}"))
	if ev.Invalid != "" || ev.ID != "9223372036854775807" || ev.AggregateType != "order " {
		t.Errorf("event = %+v, want valid with text forms", ev)
	}
}

func TestHeaderNotText(t *testing.T) {
	table := decode.Table{Name: "outbox", Headers: []decode.HeaderColumn{{Column: "trace", Header: "Trace"}}}
	rel := relationMsg(outboxRelid, "public", "outbox", append(debeziumCols, col{"trace", oidText})...)
	ins := insertMsg(outboxRelid, txt("e1"), txt("a"), txt("b"), txt("c"), txt("{}"), val{Kind: 'b', Data: "x"})
	ev := decodeRow(t, table, rel, ins)
	want := `header Trace (column "trace") arrived in binary format; the relay reads text format only`
	if ev.Invalid != want || len(ev.Headers) != 0 {
		t.Errorf("Invalid = %q, headers %v; want %q and no headers", ev.Invalid, ev.Headers, want)
	}
}
