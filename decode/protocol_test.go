package decode_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/decode"
)

func TestProtocolErrors(t *testing.T) {
	rel := debeziumRelation()
	begin := beginMsg(0x100, time.Unix(0, 0), 1)
	row := debeziumRow("e1", "a", "b", "c", "{}")
	for _, tc := range []struct {
		name      string
		msgs      [][]byte // all but the last must decode
		want      string   // in the last one's error
		malformed bool
	}{
		{"insert outside a transaction", [][]byte{rel, row}, "outside a transaction", false},
		{"delete outside a transaction", [][]byte{rel, deleteMsg(outboxRelid, 'K', txt("e1"))}, "outside a transaction", false},
		{"unknown relation", [][]byte{begin, row}, "no Relation message described", false},
		{"commit without begin", [][]byte{commitMsg(1, 2, time.Unix(0, 0))}, "without a begin", false},
		{"nested begin", [][]byte{begin, begin}, "call Reset", false},
		{"commit LSN mismatch", [][]byte{begin, commitMsg(0x101, 0x200, time.Unix(0, 0))}, "differs", false},
		{"transactional message outside a transaction", [][]byte{messageMsg(true, 1, "p", nil)}, "outside a transaction", false},
		{"column count", [][]byte{rel, begin, insertMsg(outboxRelid, txt("1"), txt("2"), txt("3"), txt("4"), txt("5"), txt("6"))},
			"has 6 columns, its Relation message said 5", false},
		{"empty message", [][]byte{{}}, "empty", true},
		{"unknown type", [][]byte{{'S', 0, 0, 0, 1}}, "unknown message type 'S'", true},
		{"trailing bytes", [][]byte{append(beginMsg(1, time.Unix(0, 0), 1), 0)}, "1 unexpected trailing bytes", true},
		{"bad tuple kind", [][]byte{rel, begin, insertMsg(outboxRelid, val{Kind: 'x'})}, "truncated or has a bad length", true},
		{"insert without N", [][]byte{rel, begin, wire{'I'}.U32(outboxRelid).U8('K').Tuple(nil)}, "bad length", true},
		{"delete with N", [][]byte{rel, begin, deleteMsg(outboxRelid, 'N', txt("e1"))}, "bad length", true},
		{"negative length", [][]byte{rel, begin, wire{'I'}.U32(outboxRelid).U8('N').U16(1).U8('t').I32(-1)}, "bad length", true},
		{"truncate count", [][]byte{rel, begin, wire{'T'}.I32(1 << 30).U8(0).U32(outboxRelid)}, "bad length", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decode.NewDecoder(debezium)
			decodeAll(t, d, tc.msgs[:len(tc.msgs)-1]...)
			_, err := d.Decode(tc.msgs[len(tc.msgs)-1])
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			if got := errors.Is(err, decode.ErrMalformed); got != tc.malformed {
				t.Errorf("errors.Is(err, ErrMalformed) = %v, want %v", got, tc.malformed)
			}
		})
	}
}

func TestReset(t *testing.T) {
	d := decode.NewDecoder(debezium)
	decodeAll(t, d, debeziumRelation(), beginMsg(0x100, time.Unix(0, 0), 1), debeziumRow("e1", "a", "b", "c", "{}"))
	// The session broke mid-transaction; the new one replays it whole.
	d.Reset()
	res := decodeAll(t, d, beginMsg(0x100, time.Unix(0, 0), 1), debeziumRelation(), debeziumRow("e1", "a", "b", "c", "{}"))
	if got := res[2].Event.TxSeq; got != 1 {
		t.Errorf("TxSeq after Reset = %d, want 1", got)
	}
}

// allMessages is one valid message of every type, with the state each needs
// set up by prelude.
func allMessages() (prelude [][]byte, msgs [][]byte) {
	prelude = [][]byte{debeziumRelation(), beginMsg(0x100, time.Unix(0, 0), 1)}
	row := []val{txt("e1"), txt("order"), txt("1"), txt("created"), txt(`{"a":[1,2]}`)}
	msgs = [][]byte{
		debeziumRelation(),
		debeziumRow("e1", "order", "1", "created", `{"a":[1,2]}`),
		insertMsg(outboxRelid, null, val{Kind: 'u'}, val{Kind: 'b', Data: "\x01"}, txt(""), null),
		updateMsg(outboxRelid, 'O', row, row),
		deleteMsg(outboxRelid, 'K', row...),
		truncateMsg(outboxRelid, outboxRelid),
		messageMsg(true, 0x60, "p", []byte("content")),
		originMsg(0x10, "node"),
		typeMsg(16500, "public", "t"),
		commitMsg(0x100, 0x140, time.Unix(0, 0)),
	}
	return prelude, msgs
}

func TestTruncatedInput(t *testing.T) {
	prelude, msgs := allMessages()
	for _, msg := range append(msgs, beginMsg(0x200, time.Unix(0, 0), 2)) {
		for n := 0; n < len(msg); n++ {
			d := decode.NewDecoder(debezium)
			if msg[0] != 'B' {
				decodeAll(t, d, prelude...)
			}
			// A copy with no spare capacity: reslicing msg[:n] past its
			// length would not panic, and would hide a bad bound.
			cut := bytes.Clone(msg[:n])
			res, err := d.Decode(cut)
			if !errors.Is(err, decode.ErrMalformed) {
				t.Errorf("%q message cut to %d of %d bytes: result %v, error %v; want ErrMalformed",
					msg[0], n, len(msg), res.Kind, err)
			}
		}
	}
}
