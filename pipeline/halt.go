package pipeline

import (
	"errors"

	"github.com/outboxrelay/outboxrelay/sink"
)

// HaltError says why the relay halted: it stopped before an event or a
// stream it cannot publish to, holds the slot without confirming past it,
// and waits for an operator (I3). Err is the cause, wrapped: an
// *sink.InvalidEventError for an event, the sink's halt for a stream that
// lost acknowledged events, or a decode or checkpoint error.
type HaltError struct {
	Err error
}

func (e *HaltError) Error() string { return "halted: " + e.Err.Error() }
func (e *HaltError) Unwrap() error { return e.Err }

// Event is the event the relay halted at, or nil when the halt is not at
// one event (a stream that lost events, a message that does not decode).
func (e *HaltError) Event() *sink.InvalidEventError {
	var inv *sink.InvalidEventError
	if errors.As(e.Err, &inv) {
		return inv
	}
	return nil
}
