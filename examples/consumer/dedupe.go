package main

import (
	"context"
	"sync"
)

// Deduper remembers which events were handled, by event id (Nats-Msg-Id,
// the outbox row's id). The relay publishes each event once, but a consumer
// can still see one twice: JetStream redelivers a message whose ack was lost
// or came after AckWait, and Consumer replays from the ack floor after a
// restart.
//
// In production, keep this in the database your handler writes to, and
// record the id in the same transaction as the handler's side effect, e.g.
//
//	BEGIN;
//	INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING;
//	-- no row inserted: a repeat; COMMIT and skip
//	... the side effect ...
//	COMMIT;
//
// so that a crash between the two can neither lose the event nor apply it
// twice. The two calls are separate here only to keep the example free of a
// database; between them, a crash means the event is handled again.
type Deduper interface {
	// Handled reports whether the event with this id was handled.
	Handled(ctx context.Context, id string) (bool, error)
	// MarkHandled records that it was.
	MarkHandled(ctx context.Context, id string) error
}

// MemoryDeduper is an in-memory Deduper that remembers the last Capacity
// ids. It forgets everything when the process exits, so it only suits
// handlers whose effects are idempotent anyway, tests and demos. Capacity
// must exceed the number of events that can come again: MaxAckPending
// (Workers*Buffer) plus what a restart replays from the ack floor.
type MemoryDeduper struct {
	mu   sync.Mutex
	seen map[string]struct{}
	ring []string // ids in the order they were marked, oldest at next
	next int
}

// NewMemoryDeduper returns a MemoryDeduper remembering up to capacity ids
// (at least 1).
func NewMemoryDeduper(capacity int) *MemoryDeduper {
	capacity = max(capacity, 1)
	return &MemoryDeduper{seen: make(map[string]struct{}, capacity), ring: make([]string, 0, capacity)}
}

// Handled reports whether id is among the remembered ids.
func (d *MemoryDeduper) Handled(_ context.Context, id string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.seen[id]
	return ok, nil
}

// MarkHandled remembers id, forgetting the oldest id when full.
func (d *MemoryDeduper) MarkHandled(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.seen[id]; ok {
		return nil
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, id)
	} else {
		delete(d.seen, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % len(d.ring)
	}
	d.seen[id] = struct{}{}
	return nil
}
