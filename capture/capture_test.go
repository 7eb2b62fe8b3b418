package capture_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestRestartThenDataInWALOrder pins the stream's shape, which the decoder
// relies on: a session opens with Restart (so partial transactions are
// dropped), then every pgoutput message follows in WAL order.
func TestRestartThenDataInWALOrder(t *testing.T) {
	e := newEnv(t, nil)
	c, _ := e.run(capture.Config{Slot: "order"}, &watermark{})
	first := started(t, c)
	for range 3 {
		e.insert(2)
	}
	msgs := txs(t, c, 3)
	prev := first.WALStart
	for _, m := range msgs {
		if m.Data[0] == 'R' && m.WALStart == 0 {
			continue // Postgres sends Relation messages without a position
		}
		if m.WALStart < prev {
			t.Errorf("%c message at %s follows one at %s", m.Data[0], m.WALStart, prev)
		}
		prev = m.WALStart
	}
	// Postgres may describe the relation again at any time, but always
	// before the first row.
	got := types(msgs)
	if r, i := strings.IndexByte(got, 'R'), strings.IndexByte(got, 'I'); r < 0 || r > i {
		t.Errorf("message types %q: want a Relation before the first Insert", got)
	}
	if got, want := strings.ReplaceAll(got, "R", ""), "BIICBIICBIIC"; got != want {
		t.Errorf("message types without Relations = %q, want %q", got, want)
	}
}

// TestWarnsOfRowsBeforeTheSlot: a slot streams only what commits after it
// is created, so rows already in the table are never published. Creating
// the slot says how many there were, counted in the slot's own snapshot.
func TestWarnsOfRowsBeforeTheSlot(t *testing.T) {
	e := newEnv(t, nil)
	logged := func(slot string) string {
		t.Helper()
		var logs testenv.SyncBuffer
		logger := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), nil))
		c, stop := e.run(capture.Config{Slot: slot, Logger: logger}, &watermark{})
		started(t, c)
		e.insert(1)
		// Only what committed after the slot streams.
		if got := strings.ReplaceAll(types(txs(t, c, 1)), "R", ""); got != "BIC" {
			t.Errorf("slot %q streamed %q, want only the insert made after it (BIC)", slot, got)
		}
		stop()
		return logs.String()
	}
	if log := logged("first"); !strings.Contains(log, "created replication slot") || strings.Contains(log, "level=WARN") {
		t.Errorf("a slot created over an empty table: want \"created replication slot\" and no warning; log:\n%s", log)
	}
	e.insert(3) // 4 rows now, with the one the first slot streamed
	log := logged("second")
	want := `held 4 rows when slot \"second\" was created`
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, want) {
		t.Errorf("log lacks a warning with %q:\n%s", want, log)
	}
}

// TestConfirmsOnlyTheWatermark pins the relay's core promise: the slot
// moves only as far as the Positioner allows, never to what was merely
// received, or Postgres would drop WAL of events not yet published.
func TestConfirmsOnlyTheWatermark(t *testing.T) {
	e := newEnv(t, nil)
	wm := &watermark{}
	c, _ := e.run(capture.Config{Slot: "confirm"}, wm)
	started(t, c)
	e.insert(1)
	e.insert(1)
	ends := commitEnds(t, txs(t, c, 2))
	low, high := ends[0], ends[1]

	wm.set(low)
	e.waitConfirmed("confirm", low)
	// Hold the watermark for many status intervals, although the capture
	// has received everything up to high.
	holds(t, time.Second, func() error {
		if lsn, _ := e.slot("confirm"); lsn > low {
			return fmt.Errorf("slot confirmed %s while the watermark was %s", lsn, low)
		}
		if got := c.Stats().Confirmed; got != low {
			return fmt.Errorf("Stats().Confirmed = %s while the watermark was %s", got, low)
		}
		return nil
	})

	wm.set(high)
	e.waitConfirmed("confirm", high)
	testenv.WaitFor(t, wait, "Stats().Confirmed to agree", func() (bool, error) {
		return c.Stats().Confirmed == high, nil
	})
}

// TestBackpressureKeepsTheSession pins that a slow consumer stalls the
// stream without losing it: while emit blocks, the capture keeps replying
// to Postgres, so wal_sender_timeout does not end the session.
func TestBackpressureKeepsTheSession(t *testing.T) {
	const timeout = 2 * time.Second
	e := newEnv(t, map[string]string{"wal_sender_timeout": timeout.String()})
	c, _ := e.run(capture.Config{Slot: "slow", Buffer: 1, StatusInterval: 250 * time.Millisecond}, &watermark{})
	started(t, c)
	_, pid := e.slot("slow")
	if pid == 0 {
		t.Fatal("slot is not active after Restart")
	}
	for range 3 {
		e.insert(5)
	}
	testenv.WaitFor(t, wait, "the buffer to fill", func() (bool, error) {
		return len(c.Messages()) == cap(c.Messages()), nil
	})
	// Nobody reads for twice the timeout: the walsender must live on.
	holds(t, 2*timeout, func() error {
		if _, got := e.slot("slow"); got != pid {
			return fmt.Errorf("slot's walsender is PID %d, want %d: the session ended while the consumer was behind", got, pid)
		}
		if ok, reason := c.Streaming(); !ok || c.Stats().Reconnects != 0 {
			return fmt.Errorf("Streaming() = %v, %q with %d reconnects while the consumer was behind", ok, reason, c.Stats().Reconnects)
		}
		return nil
	})

	if got := strings.Count(types(txs(t, c, 3)), "I"); got != 15 {
		t.Errorf("got %d inserts, want 15", got)
	}
	if got := c.Stats().Reconnects; got != 0 {
		t.Errorf("Stats().Reconnects = %d, want 0", got)
	}
}

// TestReconnectReplaysFromConfirmed pins recovery from a lost connection:
// the capture reconnects, announces it with Restart, and Postgres sends
// again every transaction after the confirmed watermark, so a transaction
// received but not yet published is not lost.
func TestReconnectReplaysFromConfirmed(t *testing.T) {
	e := newEnv(t, nil)
	wm := &watermark{}
	c, _ := e.run(capture.Config{Slot: "replay"}, wm)
	started(t, c)
	e.insert(1)
	confirmed := commitEnds(t, txs(t, c, 1))[0]
	wm.set(confirmed)
	e.waitConfirmed("replay", confirmed)
	e.insert(2)
	sent := parse[*pglogrepl.BeginMessage](t, txs(t, c, 1)[0])

	var killed bool
	err := e.conn.QueryRow(context.Background(), `SELECT pg_terminate_backend(active_pid)
		FROM pg_replication_slots WHERE slot_name = 'replay'`).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("terminate the walsender: %v, %v", killed, err)
	}

	m := next(t, c)
	if m.Kind != capture.Restart {
		t.Fatalf("after the walsender was killed, got a message of kind %d, want Restart", m.Kind)
	}
	if m.WALStart != confirmed {
		t.Errorf("Restart at %s, want the confirmed position %s", m.WALStart, confirmed)
	}
	if got := c.Stats().Reconnects; got < 1 {
		t.Errorf("Stats().Reconnects = %d, want at least 1", got)
	}
	again := txs(t, c, 1)
	if got := parse[*pglogrepl.BeginMessage](t, again[0]); got.Xid != sent.Xid || got.FinalLSN != sent.FinalLSN {
		t.Errorf("first transaction after Restart is xid %d at %s, want the unconfirmed xid %d at %s",
			got.Xid, got.FinalLSN, sent.Xid, sent.FinalLSN)
	}
	if got := strings.Count(types(again), "I"); got != 2 {
		t.Errorf("replayed transaction has %d inserts, want 2", got)
	}
}

// TestStandbyTakesOver pins running two relays on one slot: the second one
// waits, says why, and takes over once the first one stops.
func TestStandbyTakesOver(t *testing.T) {
	e := newEnv(t, nil)
	active, stopActive := e.run(capture.Config{Slot: "shared"}, &watermark{})
	started(t, active)
	standby, _ := e.run(capture.Config{Slot: "shared"}, &watermark{})
	var reason string
	testenv.WaitFor(t, wait, "the standby to report the slot in use", func() (bool, error) {
		if standby.Stats().Reconnects == 0 {
			return false, nil
		}
		var ok bool
		ok, reason = standby.Streaming()
		return !ok, nil
	})
	if !strings.Contains(reason, "is active") {
		t.Errorf("standby's Streaming() reason = %q, want one saying the slot is active", reason)
	}
	if n := len(standby.Messages()); n != 0 {
		t.Errorf("standby emitted %d messages while the slot was held", n)
	}

	stopActive()
	started(t, standby)
	if ok, reason := standby.Streaming(); !ok {
		t.Errorf("standby's Streaming() = false, %q after it took over", reason)
	}
	e.insert(1)
	if got := strings.Count(types(txs(t, standby, 1)), "I"); got != 1 {
		t.Errorf("standby streamed %d inserts, want 1", got)
	}
}

// While the consumer is behind, the capture reads nothing, so a session that
// Postgres ended shows up only when a standby status fails to go out. It
// must then stop reporting Streaming at once, not when the consumer catches
// up (which may be never, if NATS is down), and reconnect once it does.
func TestLostWhileBehindIsReported(t *testing.T) {
	e := newEnv(t, nil)
	c, _ := e.run(capture.Config{Slot: "lost", Buffer: 1, StatusInterval: 250 * time.Millisecond}, &watermark{})
	started(t, c)
	for range 3 {
		e.insert(5)
	}
	testenv.WaitFor(t, wait, "the buffer to fill", func() (bool, error) {
		return len(c.Messages()) == cap(c.Messages()), nil
	})
	if _, err := e.conn.Exec(context.Background(), "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'lost'"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, wait, "Streaming() to turn false while the consumer is behind", func() (bool, error) {
		ok, reason := c.Streaming()
		return !ok && reason != "", fmt.Errorf("Streaming() = %v, %q", ok, reason)
	})
	// Reading again: what was buffered comes out, then a new session starts.
	timeout := time.After(wait)
	for {
		select {
		case m := <-c.Messages():
			if m.Kind != capture.Restart {
				continue
			}
			if c.Stats().Reconnects < 1 {
				t.Errorf("Stats().Reconnects = %d after a new session, want >= 1", c.Stats().Reconnects)
			}
			return
		case <-timeout:
			t.Fatal("no new session (Restart) after the consumer caught up")
		}
	}
}

// A problem retrying cannot fix ends Run with a PermanentError, and
// Streaming must say what it is: it is what /readyz shows an operator.
func TestPermanentErrorIsReported(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.conn.Exec(context.Background(), "SELECT pg_create_logical_replication_slot('other', 'test_decoding')"); err != nil {
		t.Fatal(err)
	}
	c := capture.New(capture.Config{URL: e.pg.URL(), Slot: "other", Publication: "outbox_pub", Tables: []string{"public.outbox"},
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, &watermark{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var perm *capture.PermanentError
	if err := c.Run(ctx); !errors.As(err, &perm) {
		t.Fatalf("Run = %v, want a *capture.PermanentError", err)
	}
	if ok, reason := c.Streaming(); ok || !strings.Contains(reason, `uses plugin "test_decoding"`) {
		t.Errorf("Streaming() = %v, %q; want false and the slot's plugin problem", ok, reason)
	}
}
