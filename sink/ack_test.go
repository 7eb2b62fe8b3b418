package sink

import (
	"encoding/json"
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestParseAck(t *testing.T) {
	for _, data := range []string{
		`{"stream":"OUTBOX","seq":1}`,
		`{"stream":"OUTBOX","seq":18446744073709551}`,
		`{"stream":"OUTBOX","seq":42,"duplicate":true}`,
		`{"stream":"OUTBOX","domain":"hub","seq":7}`,
		`{"stream":"OTHER","seq":7}`,
		`{"stream":"OUTBOX2","seq":7}`,
		`{"stream":"OUTBOX","seq":}`,
		`{"stream":"OUTBOX","seq":5,"batch":"x"}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"OUTBOX","seq":0}`,
		`{"stream":"OUTBOX"`,
		``,
	} {
		var fast, slow pubAck
		if !parseAck([]byte(data), "OUTBOX", &fast) {
			continue // json.Unmarshal reads it
		}
		if err := json.Unmarshal([]byte(data), &slow); err != nil {
			t.Errorf("parseAck accepted %q, which is not JSON: %v", data, err)
			continue
		}
		if fast.Stream != slow.Stream || fast.Seq != slow.Seq || fast.Duplicate != slow.Duplicate || slow.Error != nil {
			t.Errorf("parseAck(%q) = %+v, json says %+v", data, fast, slow)
		}
	}
	var a pubAck
	if !parseAck([]byte(`{"stream":"OUTBOX","seq":42,"duplicate":true}`), "OUTBOX", &a) || a.Seq != 42 || !a.Duplicate {
		t.Errorf("the duplicate form was not read fast: %+v", a)
	}
}

func TestFormatLSN(t *testing.T) {
	for _, lsn := range []pglogrepl.LSN{0, 1, 0x16B3748, 0xA_0000_0000, 0xFFFFFFFF_FFFFFFFF, 0x1_0000_00F0} {
		if got, want := formatLSN(lsn), lsn.String(); got != want {
			t.Errorf("formatLSN(%d) = %q, want %q", uint64(lsn), got, want)
		}
	}
}

func BenchmarkParseAck(b *testing.B) {
	data := []byte(`{"stream":"OUTBOX","seq":123456789}`)
	b.ReportAllocs()
	for b.Loop() {
		var a pubAck
		if !parseAck(data, "OUTBOX", &a) {
			b.Fatal("not parsed")
		}
	}
}

func BenchmarkUnmarshalAck(b *testing.B) {
	data := []byte(`{"stream":"OUTBOX","seq":123456789}`)
	b.ReportAllocs()
	for b.Loop() {
		var a pubAck
		if err := json.Unmarshal(data, &a); err != nil {
			b.Fatal(err)
		}
	}
}
