package schema_test

import (
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/schema"
)

// The compose setup and the tests create the table from this string; an
// empty embed (a renamed file) would leave them without it.
func TestOutboxCreatesTheTable(t *testing.T) {
	if !strings.Contains(schema.Outbox, "CREATE TABLE IF NOT EXISTS public.outbox") {
		t.Fatalf("schema.Outbox does not create public.outbox:\n%s", schema.Outbox)
	}
	for _, col := range []string{"id", "aggregatetype", "aggregateid", "type", "payload"} {
		if !strings.Contains(schema.Outbox, "\n    "+col+" ") {
			t.Errorf("schema.Outbox lacks the column %s the relay's default mapping reads", col)
		}
	}
}
