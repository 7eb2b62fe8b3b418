package checkpoint_test

import (
	"math/rand/v2"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/checkpoint"
)

type lsn = pglogrepl.LSN

// tx announces a transaction of n events and commits it; it returns nothing
// acked, so the caller decides the ack order.
func tx(t *testing.T, tr *checkpoint.Tracker, commit, end lsn, n int) {
	t.Helper()
	ok, err := tr.Begin(commit)
	if err != nil || !ok {
		t.Fatalf("Begin(%s) = %v, %v; want true, nil", commit, ok, err)
	}
	for range n {
		tr.Add(commit)
	}
	if err := tr.Commit(commit, end); err != nil {
		t.Fatal(err)
	}
}

func TestWatermarkWaitsForEveryAck(t *testing.T) {
	tr := checkpoint.New(100)
	tx(t, tr, 200, 210, 2)
	tx(t, tr, 300, 310, 1)
	if got, want := tr.Watermark(), lsn(100); got != want {
		t.Fatalf("watermark before acks = %s, want %s", got, want)
	}
	tr.Ack(200)
	if got, want := tr.Watermark(), lsn(100); got != want {
		t.Fatalf("watermark with one of two acked = %s, want %s", got, want)
	}
	tr.Ack(200)
	if got, want := tr.Watermark(), lsn(210); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
	tr.Ack(300)
	if got, want := tr.Watermark(), lsn(310); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
	if got := tr.InFlight(); got != 0 {
		t.Fatalf("in flight = %d, want 0", got)
	}
}

func TestOutOfOrderAcks(t *testing.T) {
	tr := checkpoint.New(0)
	tx(t, tr, 10, 11, 1)
	tx(t, tr, 20, 21, 3)
	tx(t, tr, 30, 31, 1)
	// The newest transaction is acked first: nothing may be confirmed.
	tr.Ack(30)
	tr.Ack(20)
	tr.Ack(20)
	if got, want := tr.Watermark(), lsn(0); got != want {
		t.Fatalf("watermark with the oldest unacked = %s, want %s", got, want)
	}
	tr.Ack(10)
	if got, want := tr.Watermark(), lsn(11); got != want {
		t.Fatalf("watermark = %s, want %s (tx 20 still has one pending)", got, want)
	}
	tr.Ack(20)
	if got, want := tr.Watermark(), lsn(31); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
}

// TestRandomAckOrder checks against a simple model: the watermark is the end
// of the longest prefix of fully acked transactions.
func TestRandomAckOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		tr := checkpoint.New(0)
		type ev struct{ tx int }
		var evs []ev
		sizes := make([]int, 1+r.IntN(20))
		for i := range sizes {
			sizes[i] = r.IntN(4) // some transactions have no outbox events
			tx(t, tr, lsn(100*(i+1)), lsn(100*(i+1)+5), sizes[i])
			for range sizes[i] {
				evs = append(evs, ev{i})
			}
		}
		r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		left := append([]int(nil), sizes...)
		for _, e := range evs {
			tr.Ack(lsn(100 * (e.tx + 1)))
			left[e.tx]--
			want := lsn(0)
			for i := range left {
				if left[i] != 0 {
					break
				}
				want = lsn(100*(i+1) + 5)
			}
			if got := tr.Watermark(); got != want {
				t.Fatalf("round %d: watermark = %s, want %s", round, got, want)
			}
		}
	}
}

// TestCommitAtWatermark: a commit record may start exactly where the last
// confirmed transaction ended (or where a keepalive said Postgres stopped).
// That transaction is new and must not be mistaken for a replay.
func TestCommitAtWatermark(t *testing.T) {
	tr := checkpoint.New(0)
	tx(t, tr, 100, 120, 1)
	tr.Ack(100)
	if got, want := tr.Watermark(), lsn(120); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
	if ok, err := tr.Begin(120); !ok || err != nil {
		t.Fatalf("Begin at the watermark = %v, %v; want true (a new transaction)", ok, err)
	}
	tr.Add(120)
	if err := tr.Commit(120, 130); err != nil {
		t.Fatal(err)
	}
	tr.Mark(200)
	tr.Ack(120)
	if ok, _ := tr.Begin(200); !ok {
		t.Fatal("Begin at a keepalive's position = false; want true")
	}
}

// TestReplayAfterReconnect: Postgres replays from the confirmed position, so
// complete but unacked transactions come again before the one that was cut.
func TestReplayAfterReconnect(t *testing.T) {
	tr := checkpoint.New(0)
	tx(t, tr, 100, 110, 2)
	tx(t, tr, 200, 210, 1)
	if ok, err := tr.Begin(300); !ok || err != nil {
		t.Fatalf("Begin(300) = %v, %v", ok, err)
	}
	tr.Add(300) // the connection breaks here, with 300 open
	for _, c := range []lsn{100, 200} {
		if ok, err := tr.Begin(c); ok || err != nil {
			t.Fatalf("replayed Begin(%s) = %v, %v; want false, nil", c, ok, err)
		}
	}
	if ok, err := tr.Begin(300); !ok || err != nil {
		t.Fatalf("Begin(300) again = %v, %v; want true, nil (resume the open transaction)", ok, err)
	}
	tr.Add(300)
	if err := tr.Commit(300, 310); err != nil {
		t.Fatal(err)
	}
	for _, c := range []lsn{100, 100, 200, 300, 300} {
		tr.Ack(c)
	}
	if got, want := tr.Watermark(), lsn(310); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
}

func TestMarkAdvancesWhenIdleOnly(t *testing.T) {
	tr := checkpoint.New(50)
	tr.Mark(60)
	if got, want := tr.Watermark(), lsn(60); got != want {
		t.Fatalf("idle mark: watermark = %s, want %s", got, want)
	}
	tx(t, tr, 100, 110, 1)
	tr.Mark(500) // received after the transaction: must wait for its ack
	if got, want := tr.Watermark(), lsn(60); got != want {
		t.Fatalf("mark behind an unacked tx: watermark = %s, want %s", got, want)
	}
	tr.Ack(100)
	if got, want := tr.Watermark(), lsn(500); got != want {
		t.Fatalf("after ack: watermark = %s, want %s", got, want)
	}
	// A mark in the middle of an open transaction adds nothing, and a mark
	// never moves the watermark back.
	ok, _ := tr.Begin(600)
	if !ok {
		t.Fatal("Begin(600) = false")
	}
	tr.Mark(590)
	tr.Add(600)
	if err := tr.Commit(600, 610); err != nil {
		t.Fatal(err)
	}
	tr.Mark(400)
	if got, want := tr.Watermark(), lsn(500); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
	tr.Ack(600)
	if got, want := tr.Watermark(), lsn(610); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
}

func TestReplayedTransactions(t *testing.T) {
	tr := checkpoint.New(0)
	tx(t, tr, 100, 110, 1)
	// Postgres replays from the confirmed position after a reconnect: the
	// transaction is known, so the caller must skip it.
	if ok, err := tr.Begin(100); ok || err != nil {
		t.Fatalf("replayed Begin(100) = %v, %v; want false, nil", ok, err)
	}
	// A transaction cut in the middle by a reconnect is resumed, not doubled.
	if ok, err := tr.Begin(200); !ok || err != nil {
		t.Fatalf("Begin(200) = %v, %v", ok, err)
	}
	tr.Add(200)
	if ok, err := tr.Begin(200); !ok || err != nil {
		t.Fatalf("resumed Begin(200) = %v, %v; want true, nil", ok, err)
	}
	if err := tr.Commit(200, 210); err != nil {
		t.Fatal(err)
	}
	tr.Ack(100)
	tr.Ack(200)
	if got, want := tr.Watermark(), lsn(210); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
	// Below the watermark is always a replay.
	if ok, _ := tr.Begin(150); ok {
		t.Fatal("Begin(150) below the watermark = true")
	}
}

func TestSteadyState(t *testing.T) {
	tr := checkpoint.New(0)
	for i := 1; i <= 100_000; i++ {
		c := lsn(i * 10)
		tx(t, tr, c, c+1, 1)
		tr.Mark(c + 2)
		if i > 10 {
			tr.Ack(lsn((i - 10) * 10))
		}
	}
	if got := tr.InFlight(); got != 10 {
		t.Fatalf("in flight = %d, want 10", got)
	}
}

// TestCutTransactionStoredElsewhere: the session breaks in the middle of
// transaction 300; while this relay is cut off a standby takes the slot,
// stores 300 and 400 and confirms past them. When this relay takes the
// slot back the replay starts at 500: 300 is closed, not left open, and its
// queued events settle from the stream.
func TestCutTransactionStoredElsewhere(t *testing.T) {
	tr := checkpoint.New(0)
	tx(t, tr, 100, 110, 1)
	if ok, err := tr.Begin(300); !ok || err != nil {
		t.Fatalf("Begin(300) = %v, %v", ok, err)
	}
	tr.Add(300)
	tr.Add(300) // cut here
	if ok, err := tr.Begin(500); !ok || err != nil {
		t.Fatalf("Begin(500) after the standby stored 300 and 400 = %v, %v; want true, nil", ok, err)
	}
	tr.Add(500)
	if err := tr.Commit(500, 510); err != nil {
		t.Fatal(err)
	}
	for _, c := range []lsn{100, 300, 500} {
		tr.Ack(c)
	}
	if got, want := tr.Watermark(), lsn(110); got != want {
		t.Fatalf("watermark with one event of 300 unsettled = %s, want %s", got, want)
	}
	tr.Ack(300)
	if got, want := tr.Watermark(), lsn(510); got != want {
		t.Fatalf("watermark = %s, want %s", got, want)
	}
}
