package sink

import (
	"context"
	"log/slog"
)

// The sink is in one of three states. Healthy: it sends. Broken (s.broken):
// the chain needs a resume, which Run does and retries; nothing is lost and
// no one need act. Halted (s.halt): it cannot go on without an operator, so
// it sends nothing more and Halted says why. Only a halt is for good.

// haltErr returns why the sink halted, or nil.
func (s *Sink) haltErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halt
}

// setHalt halts the sink with err and returns err.
func (s *Sink) setHalt(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.haltLocked(err)
}

// haltLocked halts the sink with err and returns err. s.mu must be held.
func (s *Sink) haltLocked(err error) error {
	s.halt = err
	s.cond.Broadcast()
	return err
}

// breakLocked marks the chain broken; Run resumes it. s.mu must be held.
func (s *Sink) breakLocked(err error) {
	s.breakWithLocked(err, slog.LevelWarn, "publish chain broken, resuming from the stream")
}

// breakWithLocked is breakLocked, logging msg at level. s.mu must be held.
func (s *Sink) breakWithLocked(err error, level slog.Level, msg string) {
	if s.broken == nil {
		s.broken = err
		s.log.Log(context.Background(), level, msg, "err", err)
		s.signal()
	}
}
