package recovery

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/sink"
)

// inStream reads the headers of the stream's messages up to sequence last
// and deletes from ids every event id it finds (dead letters included: they
// were handled). It returns how many it deleted. Reading the whole stream,
// not only the duplicate window, is what makes a recovery exactly once
// whatever the window is.
func inStream(ctx context.Context, js jetstream.JetStream, stream string, last uint64, ids map[string]bool) (int, error) {
	if last == 0 || len(ids) == 0 {
		return 0, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return 0, fmt.Errorf("read stream %q: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("read stream %q: %w", stream, err)
	}
	defer it.Stop()
	found := 0
	for {
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return found, fmt.Errorf("read stream %q: %w", stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return found, fmt.Errorf("read stream %q: %w", stream, err)
		}
		id := m.Headers().Get(sink.HeaderEventID)
		if ids[id] {
			delete(ids, id)
			found++
		}
		if meta.Sequence.Stream >= last || meta.NumPending == 0 || len(ids) == 0 {
			return found, nil
		}
	}
}
