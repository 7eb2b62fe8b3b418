package sink

func (s *Sink) fatalErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatal
}

func (s *Sink) setFatal(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fatal = err
	s.cond.Broadcast()
	return err
}

// breakLocked marks the chain broken; Run resumes it. s.mu must be held.
func (s *Sink) breakLocked(err error) {
	if s.broken == nil {
		s.broken = err
		s.log.Warn("publish chain broken, resuming from the stream", "err", err)
		s.signal()
	}
}
