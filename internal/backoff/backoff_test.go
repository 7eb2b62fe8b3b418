package backoff_test

import (
	"context"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/backoff"
)

func TestNextDoublesFromMinToMax(t *testing.T) {
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		got := b.Next()
		w *= time.Millisecond
		if b.Current() != w {
			t.Fatalf("wait %d: current %v, want %v", i, b.Current(), w)
		}
		if got < w/2 || got > w {
			t.Fatalf("wait %d: jittered %v outside [%v, %v]", i, got, w/2, w)
		}
	}
	b.Reset()
	if b.Next(); b.Current() != 100*time.Millisecond {
		t.Fatalf("after Reset: current %v, want 100ms", b.Current())
	}
}

func TestCapLowersTheWait(t *testing.T) {
	b := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for range 5 {
		b.Next()
	}
	if got := b.Cap(2 * time.Second); got > 2*time.Second || b.Current() != 2*time.Second {
		t.Fatalf("Cap(2s): returned %v, current %v", got, b.Current())
	}
	// Growth continues from the capped wait.
	if b.Next(); b.Current() != 4*time.Second {
		t.Fatalf("Next after Cap: current %v, want 4s", b.Current())
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if backoff.Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported a full wait after its context ended")
	}
	if !backoff.Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep reported an interrupted wait")
	}
}
