package capture

// This file hands messages downstream within a budget of bytes.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultBufferBytes is how many bytes of messages may wait for the
// consumer when Config.BufferBytes is not set.
const DefaultBufferBytes = 8 << 20

// budget counts the bytes of the Data messages emitted and not yet
// released by the consumer (Message.Release). The capture takes from it
// before it emits and reads nothing more from Postgres while it cannot:
// a count of messages alone would let 4,096 messages of a few hundred
// kilobytes each wait in memory (docs/design.md, I4).
type budget struct {
	limit   int64
	held    atomic.Int64
	waiting atomic.Bool   // the capture waits for freed
	freed   chan struct{} // capacity 1; signalled by release while waiting
}

func newBudget(limit int) *budget {
	return &budget{limit: int64(limit), freed: make(chan struct{}, 1)}
}

// take reserves n bytes, and reports false when they would go over the
// limit. A message larger than the limit is taken when nothing else is
// held, so it still goes through, alone. Only the capture's stream loop
// takes, so nothing can take between the check and the add.
func (b *budget) take(n int) bool {
	h := b.held.Load()
	if h > 0 && h+int64(n) > b.limit {
		return false
	}
	b.held.Add(int64(n))
	return true
}

// release returns n bytes and wakes the capture if it waits for them. The
// capture sets waiting before it tries take again, and release reads it
// after the add, so one of the two sees the other: no wake-up is lost.
func (b *budget) release(n int) {
	b.held.Add(-int64(n))
	if b.waiting.Load() {
		select {
		case b.freed <- struct{}{}:
		default:
		}
	}
}

// Release tells the capture that the consumer no longer counts m.Data as
// waiting: it dropped it, or handed it to a component that bounds its own
// bytes (the sink's window). Call it once for every message received; the
// capture reads nothing more from Postgres while the bytes it emitted and
// that were not released reach Config.BufferBytes.
func (m Message) Release() {
	if m.budget != nil {
		m.budget.release(len(m.Data))
	}
}

// emit hands m downstream, once its bytes fit in the budget and the
// channel has room. While the consumer is behind it keeps confirming, so
// Postgres does not time the connection out; it reads nothing meanwhile,
// which is the backpressure that keeps memory bounded. It reports false
// when ctx ended first.
func (c *Capture) emit(ctx context.Context, conn *pgconn.PgConn, floor pglogrepl.LSN, m Message) bool {
	taken := m.Kind != Data
	if !taken {
		m.budget = c.budget
		taken = c.budget.take(len(m.Data))
	}
	if taken {
		select {
		case c.out <- m:
			return true
		default:
		}
	}
	// Reading nothing while we wait is not silence from Postgres.
	defer func() { c.waited = true }()
	t := time.NewTicker(c.cfg.StatusInterval)
	defer t.Stop()
	for !taken {
		c.budget.waiting.Store(true)
		if taken = c.budget.take(len(m.Data)); taken {
			break
		}
		select {
		case <-c.budget.freed:
		case <-ctx.Done():
			c.budget.waiting.Store(false)
			return false
		case <-t.C:
			c.keepAlive(conn, floor)
		}
	}
	c.budget.waiting.Store(false)
	for {
		select {
		case c.out <- m:
			return true
		case <-ctx.Done():
			m.Release()
			return false
		case <-t.C:
			c.keepAlive(conn, floor)
		}
	}
}

// keepAlive confirms while emit waits for the consumer.
func (c *Capture) keepAlive(conn *pgconn.PgConn, floor pglogrepl.LSN) {
	if err := c.sendStatus(conn, floor, false); err != nil {
		// The session is lost; the stream loop finds out at its next
		// receive, once m is taken. Say so now.
		c.log.Warn("send standby status", "err", err)
		msg := err.Error()
		c.lastErr.Store(&msg)
		c.streaming.Store(false)
	}
}
