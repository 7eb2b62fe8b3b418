package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
)

// TestCloudEventsSources checks the ce-source of each event source: by
// default /postgres/<database>/<schema.table>, one per table, then the
// message events', each segment a URI path segment whatever the names; a
// configured source for every one.
func TestCloudEventsSources(t *testing.T) {
	t.Setenv("PGDATABASE", "") // pgconn would take it for a URL without a database
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"one table", "postgres: {url: 'postgres://relay@db:5432/app'}\n",
			[]string{"/postgres/app/public.outbox", "/postgres/app/pg_logical_emit_message/"}},
		{"tables and messages", `postgres: {url: 'postgres://relay@db/app'}
outbox:
  tables: [{table: sales.orders}, {table: billing}]
  messages: {prefix: "ev/1"}
`, []string{"/postgres/app/sales.orders", "/postgres/app/public.billing", "/postgres/app/pg_logical_emit_message/ev%2F1"}},
		{"no database: the user's", "postgres: {url: 'postgres://relay@db'}\n",
			[]string{"/postgres/relay/public.outbox", "/postgres/relay/pg_logical_emit_message/"}},
		{"database in a key=value DSN", `postgres: {url: "host=db user=relay dbname='orders ü'"}` + "\n",
			[]string{"/postgres/orders%20%C3%BC/public.outbox", "/postgres/orders%20%C3%BC/pg_logical_emit_message/"}},
		{"configured", "postgres: {url: 'postgres://relay@db/app'}\nnats: {format: cloudevents, cloudevents: {source: 'https://example.com/orders?region=eu', datacontenttype: 'application/json; charset=utf-8'}}\noutbox: {messages: {prefix: outbox}}\n",
			[]string{"https://example.com/orders?region=eu"}}, // messages only
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.ParseConfig(strings.NewReader(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := cloudEvents(cfg).Sources; !slices.Equal(got, c.want) {
				t.Errorf("sources = %q, want %q", got, c.want)
			}
		})
	}
}
