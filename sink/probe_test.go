package sink_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// TestSinkProbesAStaleResume: a standby's sink resumes when the relay
// starts, on the stream as it was then. Another relay (the active one)
// stores 500 events, and the standby then takes the slot past them and gets
// the next 1,000 at once: its chain starts from a prediction 500 behind the
// stream. All of them must be stored once, in order. Without the probe, the
// first 500 sends are refused, the next ones line up with the stream and are
// stored after events they do not follow, and the resume settles the refused
// ones as stored: 500 events lost.
func TestSinkProbesAStaleResume(t *testing.T) {
	n := testenv.StartNATS(t)
	p := testenv.StartProxy(t, "127.0.0.1:"+strconv.Itoa(n.Port()))
	other := connect(t, n.URL())
	js := newJS(t, other)
	a := newAcker()
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s := startSink(t, connect(t, "nats://"+p.Addr()), sink.Config{AckTimeout: 30 * time.Second, Logger: log}, a)
	waitHealthy(t, s) // resumed on the empty stream

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, ev := range makeEvents(1, 500) {
		storeAsRelay(ctx, t, js, ev, ev.ID)
	}
	// The standby's sends all reach nats-server before any PubAck reaches
	// the sink, as when a replay hands it a window of events at once.
	p.Freeze()
	for _, ev := range makeEvents(501, 1500) {
		if err := s.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	p.Thaw()
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	checkExactlyOnceInOrder(t, readStream(t, js, testStream), makeEvents(1, 1500))
	a.check(t, makeEvents(501, 1500))
	// The refused probe is what a standby that takes over expects: said at
	// info, not as a broken chain.
	if got := logs.String(); !strings.Contains(got, "level=INFO msg=\"the stream moved on since this relay last read it") || strings.Contains(got, "level=WARN") {
		t.Errorf("want the refused probe logged at info and no warning; the log:\n%s", got)
	}
}
