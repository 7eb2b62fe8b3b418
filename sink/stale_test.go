package sink

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/decode"
)

type nopAcker struct{}

func (nopAcker) Ack(pglogrepl.LSN) {}

// A probe refused for "wrong last sequence" is what a standby sees once
// when it takes over, so it is said at info (TestSinkProbesAStaleResume
// shows it against nats-server). A second refusal in a row means something
// else keeps storing on the stream, so it warns; a probe that is stored
// starts the count again.
func TestStaleProbesInARowWarn(t *testing.T) {
	var logs bytes.Buffer
	s := &Sink{cfg: Config{Stream: "OUTBOX"}, acker: nopAcker{}, inbox: "_INBOX.t.", kick: make(chan struct{}, 1),
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	s.cond = sync.NewCond(&s.mu)
	// probe puts a send on the wire as a resume's probe, as resume and
	// sendQueued leave it.
	probe := func(seq uint64) {
		s.epoch++
		s.broken = nil
		s.queue, s.head, s.sent = []*inflight{{ev: &decode.Event{}, seq: seq}}, 0, 1
		s.probing = true
	}
	ack := func(data string) string {
		logs.Reset()
		s.onAck(&nats.Msg{Subject: s.inbox + strconv.FormatUint(s.epoch, 10), Data: []byte(data)})
		return logs.String()
	}
	const refused = `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"OUTBOX","seq":0}`
	const info = `level=INFO msg="the stream moved on since this relay last read it`
	const warn = `level=WARN msg="publish chain broken, resuming from the stream"`

	probe(1)
	if got := ack(refused); !strings.Contains(got, info) || s.broken == nil {
		t.Fatalf("first refused probe: broken=%v, log %q; want the chain broken and %q", s.broken, got, info)
	}
	probe(1)
	if got := ack(refused); !strings.Contains(got, warn) || s.broken == nil {
		t.Fatalf("second refused probe in a row: broken=%v, log %q; want the chain broken and %q", s.broken, got, warn)
	}
	probe(6)
	if got := ack(`{"stream":"OUTBOX","seq":6}`); s.broken != nil || s.probing || got != "" {
		t.Fatalf("stored probe: broken=%v probing=%v, log %q; want it settled, silently", s.broken, s.probing, got)
	}
	probe(7)
	if got := ack(refused); !strings.Contains(got, info) {
		t.Fatalf("refused probe after a stored one: log %q; want %q again", got, info)
	}
}
