package capture_test

import (
	"context"
	"testing"

	"github.com/outboxrelay/outboxrelay/capture"
	"github.com/outboxrelay/outboxrelay/internal/report"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestPreflightPartitions: for each publication that would name a
// configured table's rows after another table (and so lose them), the
// preflight fails with the fix; for those that would not, it passes.
func TestPreflightPartitions(t *testing.T) {
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	err := pg.Exec(ctx, `CREATE TABLE public.outbox (
			id uuid NOT NULL DEFAULT gen_random_uuid(), aggregatetype text NOT NULL, aggregateid text NOT NULL,
			type text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at)
		) PARTITION BY RANGE (created_at);
		CREATE TABLE public.outbox_2025 PARTITION OF public.outbox FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE public.outbox_default PARTITION OF public.outbox DEFAULT`)
	if err != nil {
		t.Fatal(err)
	}
	const (
		root = `outbox table public.outbox is partitioned and publication "outboxrelay" does not publish via the partition root, so pgoutput would name each partition instead of public.outbox and the relay would ignore every event: run ALTER PUBLICATION "outboxrelay" SET (publish_via_partition_root = true)`
		leaf = `outbox table public.outbox_2025 is a partition of public.outbox, and publication "outboxrelay" publishes its rows under the name public.outbox (publish_via_partition_root = true), so the relay would ignore every event: configure the partitioned table public.outbox as the outbox table instead, or point postgres.publication at a publication that includes public.outbox_2025 and none of the tables it is a partition of`
	)
	for _, tc := range []struct {
		name, publication string // the CREATE PUBLICATION's tail; "" for none
		tables            []string
		status            report.Status
		want              string
	}{
		{"root, not via the root", "FOR TABLE public.outbox", []string{"public.outbox"}, report.Fail, root},
		{"root, only a partition published", "FOR TABLE public.outbox_2025", []string{"public.outbox"}, report.Fail, root},
		{"root, only a partition published via the root", "FOR TABLE public.outbox_2025 WITH (publish_via_partition_root = true)", []string{"public.outbox"}, report.Fail,
			`publication "outboxrelay" does not include table public.outbox: run ALTER PUBLICATION "outboxrelay" ADD TABLE "public"."outbox" (or point postgres.publication at another publication)`},
		{"root, all tables not via the root", "FOR ALL TABLES", []string{"public.outbox"}, report.Fail, root},
		{"root via the root", "FOR TABLE public.outbox WITH (publish_via_partition_root = true)", []string{"public.outbox"}, report.OK, "exists and includes public.outbox"},
		{"root to be created", "", []string{"public.outbox"}, report.OK,
			`does not exist yet; the relay will create it: CREATE PUBLICATION "outboxrelay" FOR TABLE "public"."outbox" WITH (publish_via_partition_root = true)`},
		{"partition, its root published via the root", "FOR TABLE public.outbox WITH (publish_via_partition_root = true)", []string{"public.outbox_2025"}, report.Fail, leaf},
		{"partition, all tables via the root", "FOR ALL TABLES WITH (publish_via_partition_root = true)", []string{"public.outbox_2025"}, report.Fail, leaf},
		{"partition and its root to be created", "", []string{"public.outbox", "public.outbox_2025"}, report.Fail, leaf},
		{"partition, its root published", "FOR TABLE public.outbox", []string{"public.outbox_2025"}, report.OK, "exists and includes public.outbox_2025"},
		{"partition alone via the root", "FOR TABLE public.outbox_2025 WITH (publish_via_partition_root = true)", []string{"public.outbox_2025"}, report.OK, "exists and includes public.outbox_2025"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := pg.Exec(ctx, "DROP PUBLICATION IF EXISTS outboxrelay"); err != nil {
				t.Fatal(err)
			}
			if tc.publication != "" {
				if err := pg.Exec(ctx, "CREATE PUBLICATION outboxrelay "+tc.publication); err != nil {
					t.Fatal(err)
				}
			}
			cfg := capture.PreflightConfig{Config: capture.Config{URL: pg.URL(), Slot: "outboxrelay", Publication: "outboxrelay", Tables: tc.tables}}
			for _, table := range tc.tables {
				cfg.Outbox = append(cfg.Outbox, capture.OutboxTable{Table: table, ID: "id", AggregateType: "aggregatetype", AggregateID: "aggregateid", Type: "type", Payload: "payload"})
			}
			var got []report.Finding
			for _, f := range capture.Preflight(ctx, cfg) {
				if f.Item == "postgres publication outboxrelay" {
					got = append(got, f)
				}
			}
			if len(got) != 1 || got[0].Status != tc.status || got[0].Text != tc.want {
				t.Errorf("the publication's findings are %+v, want one %s: %s", got, tc.status, tc.want)
			}
		})
	}
}
