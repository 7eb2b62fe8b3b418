package config

import (
	"errors"
	"strings"

	"github.com/outboxrelay/outboxrelay/subject"
)

// parseSubjectTemplate checks a subject template with subject.Parse, whose
// errors follow the key that holds the template. A misspelt placeholder is
// met with the nearest known one, as a misspelt key is.
func parseSubjectTemplate(s string) (*subject.Template, error) {
	t, err := subject.Parse(s)
	var up *subject.UnknownPlaceholderError
	if errors.As(err, &up) {
		up.Suggestion = nearest(strings.ReplaceAll(up.Name, "-", "_"), subject.Placeholders())
	}
	return t, err
}
