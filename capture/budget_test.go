package capture_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestBufferBytes (I4): the capture emits no more than BufferBytes of
// messages the consumer has not released, whatever their count, and reads
// nothing more meanwhile without losing the session; released bytes let
// the rest through, and a message larger than the budget comes alone.
func TestBufferBytes(t *testing.T) {
	const (
		budget  = 64 << 10
		rows    = 20
		size    = 10 << 10 // each insert message is a little more
		big     = 100 << 10
		timeout = 2 * time.Second
	)
	e := newEnv(t, map[string]string{"wal_sender_timeout": timeout.String()})
	c, _ := e.run(capture.Config{Slot: "bytes", BufferBytes: budget, StatusInterval: 250 * time.Millisecond}, &watermark{})
	started(t, c)
	_, pid := e.slot("bytes")
	ctx := context.Background()
	insert := func(n, size int) {
		t.Helper()
		_, err := e.conn.Exec(ctx, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
			SELECT 'order', i::text, 'created', jsonb_build_object('r', repeat('x', $2)) FROM generate_series(1, $1) i`, n, size)
		if err != nil {
			t.Fatal(err)
		}
	}
	insert(rows, size)
	insert(1, big)

	// Take messages without releasing them until the budget is full.
	var held []capture.Message
	heldBytes := 0
	take := func(m capture.Message) {
		if m.Kind == capture.Data {
			held = append(held, m)
			heldBytes += len(m.Data)
		}
	}
	testenv.WaitFor(t, wait, "the budget to fill", func() (bool, error) {
		for len(c.Messages()) > 0 {
			take(<-c.Messages())
		}
		return heldBytes+size > budget, fmt.Errorf("%d messages, %d bytes held", len(held), heldBytes)
	})
	// Nothing more comes while they are held, for twice the sender
	// timeout, and the session lives on.
	holds(t, 2*timeout, func() error {
		for len(c.Messages()) > 0 {
			take(<-c.Messages())
		}
		if heldBytes > budget {
			return fmt.Errorf("%d messages of %d bytes emitted and not released, over the budget of %d", len(held), heldBytes, budget)
		}
		if _, got := e.slot("bytes"); got != pid {
			return fmt.Errorf("slot's walsender is PID %d, want %d: the session ended while the budget was full", got, pid)
		}
		return nil
	})
	t.Logf("budget full: %d messages, %d bytes held (budget %d)", len(held), heldBytes, budget)

	// Released, the rest comes: the other inserts, the commit, and the big
	// transaction, whose insert is larger than the budget.
	inserts, commits, bigSeen := 0, 0, false
	count := func(m capture.Message) {
		if m.Kind != capture.Data {
			return
		}
		switch m.Data[0] {
		case 'I':
			inserts++
			bigSeen = bigSeen || len(m.Data) > big
		case 'C':
			commits++
		}
	}
	for _, m := range held {
		count(m)
		m.Release()
	}
	deadline := time.After(wait)
	for commits < 2 {
		select {
		case m := <-c.Messages():
			count(m)
			m.Release()
		case <-deadline:
			t.Fatalf("after release: %d inserts and %d commits, want %d and 2", inserts, commits, rows+1)
		}
	}
	if inserts != rows+1 || !bigSeen {
		t.Fatalf("after release: %d inserts (the big one seen: %v), want %d with the big one", inserts, bigSeen, rows+1)
	}
}
