// Package backoff computes the waits between retries of a failing operation:
// a wait that doubles from a floor to a cap after each failure, spread by
// jitter so that relays started together do not retry in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the wait before the next retry. The zero value needs Min and
// Max set; it is not safe for concurrent use.
type Backoff struct {
	Min time.Duration // the first wait after a success or Reset
	Max time.Duration // the longest wait
	d   time.Duration
}

// Next doubles the wait, from Min up to Max, and returns it with jitter: a
// uniformly random duration in [wait/2, wait].
func (b *Backoff) Next() time.Duration {
	b.d = min(max(2*b.d, b.Min), b.Max)
	return Jitter(b.d)
}

// Cap lowers the current wait to at most d, for a retry that must stay
// brisk (a standby polling for the slot), and returns it with jitter.
func (b *Backoff) Cap(d time.Duration) time.Duration {
	b.d = min(b.d, d)
	return Jitter(b.d)
}

// Current is the wait without jitter: 0 after a Reset.
func (b *Backoff) Current() time.Duration { return b.d }

// Reset starts the next failure over at Min: call it after progress.
func (b *Backoff) Reset() { b.d = 0 }

// Jitter returns a uniformly random duration in [d/2, d].
func Jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// Sleep waits for d, or until ctx ends. It reports whether the full wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
