package config_test

import (
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/config"
)

func TestOneTableShortForm(t *testing.T) {
	c := mustParse(t, pg+"outbox:\n  table: events\n  columns: {id: event_id}\n  headers: {trace: Trace}\nnats: {subject: 'ev.{aggregate_id}'}\n", nil)
	if len(c.Outbox.Tables) != 1 {
		t.Fatalf("Tables = %+v, want the short form as one table", c.Outbox.Tables)
	}
	tb := c.Outbox.Tables[0]
	if tb.Table != "public.events" || tb.Columns.ID != "event_id" || tb.Columns.Payload != "payload" || tb.Subject != "ev.{aggregate_id}" || len(tb.Headers) != 1 {
		t.Errorf("table = %+v", tb)
	}
	if c.Outbox.Table != "public.events" {
		t.Errorf("Table = %q, want it kept for the short form", c.Outbox.Table)
	}
}

func TestSeveralTables(t *testing.T) {
	c := mustParse(t, pg+`outbox:
  tables:
    - table: orders_outbox
    - table: billing.outbox
      columns: {aggregate_id: account}
      headers: {tenant: Tenant}
      subject: billing.{aggregate_type}.{aggregate_id}
`, nil)
	ts := c.Outbox.Tables
	if len(ts) != 2 {
		t.Fatalf("Tables = %+v", ts)
	}
	if ts[0].Table != "public.orders_outbox" || ts[0].Subject != config.DefaultConfig().NATS.Subject || ts[0].Columns != config.DefaultColumns() {
		t.Errorf("first table = %+v, want defaults filled in", ts[0])
	}
	if ts[1].Table != "billing.outbox" || ts[1].Columns.AggregateID != "account" || ts[1].Columns.ID != "id" ||
		ts[1].Subject != "billing.{aggregate_type}.{aggregate_id}" || len(ts[1].Headers) != 1 || ts[1].Headers[0].Header != "Tenant" {
		t.Errorf("second table = %+v", ts[1])
	}
	if c.Outbox.Table != "" {
		t.Errorf("Table = %q, want empty when outbox.tables is used", c.Outbox.Table)
	}
}

func TestMessagesOnly(t *testing.T) {
	c := mustParse(t, pg+"outbox:\n  messages: {prefix: outbox}\nnats: {subject: 'm.{aggregate_type}.{aggregate_id}'}\n", nil)
	if len(c.Outbox.Tables) != 0 || c.Outbox.Table != "" {
		t.Errorf("Tables = %+v, Table = %q; want no table when only messages are configured", c.Outbox.Tables, c.Outbox.Table)
	}
	if c.Outbox.Messages.Prefix != "outbox" || c.Outbox.Messages.Subject != "m.{aggregate_type}.{aggregate_id}" {
		t.Errorf("Messages = %+v", c.Outbox.Messages)
	}

	both := mustParse(t, pg+"outbox:\n  table: outbox\n  messages: {prefix: outbox, subject: 'msg.{aggregate_id}'}\n", nil)
	if len(both.Outbox.Tables) != 1 || both.Outbox.Messages.Subject != "msg.{aggregate_id}" {
		t.Errorf("table and messages: %+v", both.Outbox)
	}
}

func TestCleanupAndPartitions(t *testing.T) {
	c := mustParse(t, pg+"outbox: {cleanup: {after: 90m}}\nnats: {partitions: 16, subject: 'outbox.{partition}.{aggregate_id}'}\n", nil)
	if c.Outbox.Cleanup.After != 90*time.Minute {
		t.Errorf("Cleanup.After = %v", c.Outbox.Cleanup.After)
	}
	if c.NATS.Partitions != 16 {
		t.Errorf("Partitions = %d", c.NATS.Partitions)
	}
	// A per-table template may be the one that uses {partition}.
	mustParse(t, pg+"outbox: {tables: [{table: a, subject: 'p.{partition}.{aggregate_id}'}]}\nnats: {partitions: 4}\n", nil)
}
