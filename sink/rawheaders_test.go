package sink

import (
	"maps"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// natsPublish calls an unexported function of nats.go by its linker name,
// so a nats.go whose (*Conn).publish changed would still link and then
// corrupt the call. This fails on any nats.go but the one it was read in.
func TestLinkedNATSVersion(t *testing.T) {
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := "github.com/nats-io/nats.go " + linkedNATS
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/nats-io/nats.go" {
			if got := f[0] + " " + f[1]; got != want {
				t.Fatalf("go.mod requires %s, but sink/rawheaders.go's natsPublish was checked against %s: "+
					"read (*Conn).publish in the new nats.go, then fix natsPublish's signature and linkedNATS", got, want)
			}
			return
		}
	}
	t.Fatalf("go.mod does not require github.com/nats-io/nats.go")
}

// What appendHeaders writes must read back, with nats.go's own decoder,
// as the header map PublishMsg would have sent.
func TestAppendHeadersAsNATSReadsThem(t *testing.T) {
	var vals [len(baseHeaders)][]string
	want := nats.Header{}
	for i, k := range baseHeaders {
		vals[i] = []string{"value of " + k + " ä"}
		want[k] = vals[i]
	}
	// The two numbers are written from their arguments, not from vals.
	if baseHeaders[hdrExpectedSeq] != HeaderExpectedSeq || baseHeaders[hdrTxSeq] != HeaderTxSeq {
		t.Fatalf("hdrExpectedSeq and hdrTxSeq are not the places of %s and %s in baseHeaders", HeaderExpectedSeq, HeaderTxSeq)
	}
	want[HeaderExpectedSeq] = []string{"18446744073709551614"}
	want[HeaderTxSeq] = []string{"4294967295"}
	hdr := appendHeaders([]byte("junk"), &vals, 1<<64-2, 1<<32-1)
	got, err := nats.DecodeHeadersMsg(hdr[len("junk"):])
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, want, func(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }) {
		t.Errorf("headers read back = %v, want %v", got, want)
	}
	if n := len(hdr) - len("junk"); n != headerLen(want) {
		t.Errorf("appendHeaders wrote %d bytes, headerLen of the same map says %d", n, headerLen(want))
	}
}

// A binary built with another nats.go, or a replaced one, never calls
// natsPublish.
func TestRawHeadersOnlyWithTheLinkedNATS(t *testing.T) {
	dep := func(v string, r *debug.Module) *debug.BuildInfo {
		return &debug.BuildInfo{Deps: []*debug.Module{{Path: "github.com/nats-io/nats.go", Version: v, Replace: r}}}
	}
	for _, c := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want bool
	}{
		{"the linked version", dep(linkedNATS, nil), true, true},
		{"another version", dep("v1.57.0", nil), true, false},
		{"replaced", dep(linkedNATS, &debug.Module{Path: "../nats.go"}), true, false},
		{"no build info", nil, false, false},
		{"a test binary", &debug.BuildInfo{}, true, true},
	} {
		if got := linkedNATSIs(c.bi, c.ok); got != c.want {
			t.Errorf("%s: linkedNATSIs = %v, want %v", c.name, got, c.want)
		}
	}
}

func BenchmarkAppendHeaders(b *testing.B) {
	var vals [len(baseHeaders)][]string
	for i, v := range []string{"3fa85f64-5717-4562-b3fc-2c963f66afa6", "", "3fa85f64-5717-4562-b3fc-2c963f66afa6",
		"OrderUpdated", "order", "agg-4242", "0/16B3748", "", "2026-11-26T15:04:05.123456Z"} {
		vals[i] = []string{v}
	}
	var buf []byte
	for b.Loop() {
		buf = appendHeaders(buf[:0], &vals, 123456789, 42)
	}
}
