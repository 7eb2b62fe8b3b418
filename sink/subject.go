package sink

import (
	"fmt"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/subject"
)

// Subject is a subject template (package subject) rendered from events.
type Subject struct {
	subject.Template
}

// ParseSubject parses a subject template with subject.Parse.
func ParseSubject(tmpl string) (*Subject, error) {
	t, err := subject.Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("subject template %q: %w", tmpl, err)
	}
	return &Subject{Template: *t}, nil
}

// Render appends the subject of ev to buf; see subject.Template.Render.
func (s *Subject) Render(buf []byte, ev *decode.Event) []byte {
	return s.Template.Render(buf, &subject.Fields{AggregateType: ev.AggregateType, AggregateID: ev.AggregateID, Type: ev.Type})
}
