package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// partitioned is the outbox of schema/outbox.sql partitioned by created_at,
// the usual way to drop old events cheaply: a partition per day, and a
// default one. The id is unique only with the partition key, as Postgres
// requires of a partitioned table's primary key. created_at defaults to
// today, tomorrow or the day after, so that the writers' rows, and the
// rows of one transaction, land in several partitions: the first two days
// have their own partitions, the third goes to the default one. The days
// are reckoned from the time of creation, so a test never crosses a
// partition's bound by the clock alone.
const partitioned = `DROP TABLE public.outbox;
CREATE TABLE public.outbox (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now() + floor(random() * 3) * interval '1 day',
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE public.outbox_default PARTITION OF public.outbox DEFAULT;
CREATE TABLE public.outbox_day0 PARTITION OF public.outbox FOR VALUES FROM (%[1]s) TO (%[2]s);
CREATE TABLE public.outbox_day1 PARTITION OF public.outbox FOR VALUES FROM (%[2]s) TO (%[3]s)`

// partitionOutbox replaces the env's outbox table with the partitioned one
// and returns its days' bounds as SQL: day(0) is its creation time.
func partitionOutbox(t *testing.T, e *env) (day func(n int) string) {
	t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var anchor string
	if err := conn.QueryRow(context.Background(), "SELECT now()::text").Scan(&anchor); err != nil {
		t.Fatal(err)
	}
	day = func(n int) string { return fmt.Sprintf("timestamptz '%s' + interval '%d days'", anchor, n) }
	if err := e.pg.Exec(context.Background(), fmt.Sprintf(partitioned, day(-1), day(1), day(2))); err != nil {
		t.Fatalf("partition the outbox table: %v", err)
	}
	return day
}

// partitionRows returns how many rows each partition of the outbox holds.
func partitionRows(t *testing.T, e *env) map[string]int {
	t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), "SELECT tableoid::regclass::text, count(*)::int FROM public.outbox GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		counts[name] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// wantRowsIn fails the test unless every partition named holds rows: the
// load really went through them.
func wantRowsIn(t *testing.T, counts map[string]int, partitions ...string) {
	t.Helper()
	for _, p := range partitions {
		if counts[p] == 0 {
			t.Errorf("partition %s holds no rows (%v): the test did not write through it", p, counts)
		}
	}
}

// TestPartitionedOutbox: writers insert into a partitioned outbox, across
// its partitions and within transactions; while they do, a partition is
// attached (with its columns in another order than the parent's) and the
// default is changed to write into it, and another partition is detached.
// Every event arrives once, in commit order.
func TestPartitionedOutbox(t *testing.T) {
	e := newEnv(t)
	day := partitionOutbox(t, e)
	e.startRelay()
	ctx := context.Background()
	js := e.js()
	l := workload{Writers: 4, Aggregates: 100, Events: 6000, MaxTx: 10, Rollback: 0.05, Pace: 20 * time.Millisecond}.start(ctx, e.pg)
	testenv.WaitFor(t, time.Minute, "some events in the stream", func() (bool, error) {
		n, err := streamCount(ctx, js)
		return n >= 300, err
	})

	// pgoutput maps the partition's rows to the parent's column order.
	// Each statement on its own: in one transaction, the ALTERs' locks
	// can deadlock with the writers' inserts. A deadlock is retried.
	for _, sql := range []string{`CREATE TABLE public.outbox_day3 (
		created_at timestamptz NOT NULL, payload jsonb, type text NOT NULL, aggregateid text NOT NULL,
		aggregatetype text NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(), PRIMARY KEY (id, created_at))`,
		fmt.Sprintf("ALTER TABLE public.outbox ATTACH PARTITION public.outbox_day3 FOR VALUES FROM (%s) TO (%s)", day(3), day(4)),
		"ALTER TABLE public.outbox ALTER COLUMN created_at SET DEFAULT now() + floor(random() * 4) * interval '1 day'",
	} {
		testenv.WaitFor(t, 30*time.Second, "attach a partition", func() (bool, error) {
			err := e.pg.Exec(ctx, sql)
			if err != nil && strings.Contains(err.Error(), "40P01") {
				return false, err // deadlock with a writer: again
			}
			if err != nil {
				t.Fatalf("attach a partition: %v", err)
			}
			return true, nil
		})
	}
	testenv.WaitFor(t, time.Minute, "rows in the attached partition", func() (bool, error) {
		n := partitionRows(t, e)["outbox_day3"]
		return n >= 100, fmt.Errorf("%d rows", n)
	})
	// From now on, tomorrow's rows go to the default partition.
	testenv.WaitFor(t, 30*time.Second, "detach a partition", func() (bool, error) {
		err := e.pg.Exec(ctx, "ALTER TABLE public.outbox DETACH PARTITION public.outbox_day1")
		if err != nil && strings.Contains(err.Error(), "40P01") {
			return false, err // deadlock with a writer: again
		}
		if err != nil {
			t.Fatalf("detach a partition: %v", err)
		}
		return true, nil
	})
	testenv.WaitFor(t, time.Minute, "rows of tomorrow in the default partition", func() (bool, error) {
		n := 0
		conn, err := e.pg.Connect(ctx)
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		err = conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM public.outbox_default WHERE created_at < %s", day(2))).Scan(&n)
		return n >= 100 || l.finished(), fmt.Errorf("%d rows, %v", n, err)
	})
	if l.finished() {
		t.Error("the load ended before the partition was detached: make it longer so the detach lands under load")
	}
	w := e.finish(l)
	counts := partitionRows(t, e)
	wantRowsIn(t, counts, "outbox_day0", "outbox_default", "outbox_day3")
	var detached int
	conn, err := e.pg.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM public.outbox_day1").Scan(&detached); err != nil {
		t.Fatal(err)
	}
	if detached == 0 {
		t.Error("the detached partition holds no rows: the test did not write through it")
	}
	t.Logf("%d events across partitions %v, and %d in the detached outbox_day1", w.Committed(), counts, detached)
}

// TestPartitionedOutboxRestartAndKill9: under load on a partitioned
// outbox, the relay is stopped with SIGTERM and started again, then killed
// with kill -9 three times and restarted each time. The stream's duplicate
// window is too short to hide a resend.
func TestPartitionedOutboxRestartAndKill9(t *testing.T) {
	e := newEnv(t)
	partitionOutbox(t, e)
	e.createStream()
	relay := e.startRelay()
	ctx := context.Background()
	js := e.js()
	l := workload{Writers: 4, Aggregates: 100, Events: 10000, MaxTx: 20, Rollback: 0.05, Hot: 0.3, Pace: 40 * time.Millisecond}.start(ctx, e.pg)
	testenv.WaitFor(t, time.Minute, "some events in the stream", func() (bool, error) {
		n, err := streamCount(ctx, js)
		return n >= 300, err
	})
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := relay.Wait(40 * time.Second); err != nil || code != 0 {
		t.Fatalf("relay after SIGTERM: exit %d, %v\n%s", code, err, relay.Output())
	}
	stopped, _ := streamCount(ctx, js)
	e.startRelay()
	const kills = 3
	for i := range kills {
		// Wait for progress since the last start, so each kill lands mid-stream.
		before, _ := streamCount(ctx, js)
		testenv.WaitFor(t, time.Minute, "the relay publishing again", func() (bool, error) {
			n, err := streamCount(ctx, js)
			return n > before+100 || l.finished(), err
		})
		if err := e.relay.Kill(); err != nil {
			t.Fatalf("kill %d: %v", i+1, err)
		}
		e.startRelay()
	}
	loadRunning := !l.finished()
	w := e.finish(l)
	counts := partitionRows(t, e)
	wantRowsIn(t, counts, "outbox_day0", "outbox_day1", "outbox_default")
	t.Logf("%d events committed across partitions %v; %d in the stream at the SIGTERM; relay killed -9 %d times (load still running after the last kill: %v)",
		w.Committed(), counts, stopped, kills, loadRunning)
	if !loadRunning {
		t.Error("the load ended before the kills did: make it longer so every kill lands under load")
	}
}

// TestPartitionedPublicationWithoutRoot: a publication made by hand without
// publish_via_partition_root, on a partitioned outbox, would lose every
// event. check fails with the ALTER PUBLICATION that fixes it; run says the
// same and streams nothing (it creates no slot). After the fix, both go on.
func TestPartitionedPublicationWithoutRoot(t *testing.T) {
	c := newCheckEnv(t)
	partitionOutbox(t, c.env)
	c.exec(t, "ALTER TABLE public.outbox OWNER TO relay; CREATE PUBLICATION outboxrelay FOR TABLE public.outbox")
	cfg := c.write(t, checkCfg{})
	const noRoot = `outbox table public.outbox is partitioned and publication "outboxrelay" does not publish via the partition root, so pgoutput would name each partition instead of public.outbox and the relay would ignore every event: run ALTER PUBLICATION "outboxrelay" SET (publish_via_partition_root = true)`
	out := c.check(t, cfg, 1)
	wantLines(t, out, "FAIL  postgres publication outboxrelay: "+noRoot)
	c.runSays(t, cfg, noRoot, nil)
	if n := c.queryInt(t, "SELECT count(*)::int FROM pg_replication_slots"); n != 0 {
		t.Errorf("run refused the publication but created %d replication slots", n)
	}

	c.exec(t, `ALTER PUBLICATION "outboxrelay" SET (publish_via_partition_root = true)`)
	out = c.check(t, cfg, 0)
	wantLines(t, out, "ok    postgres publication outboxrelay: exists and includes public.outbox")
	relay := testenv.StartProcess(t, c.bin, "run", "-config", cfg)
	testenv.WaitFor(t, 30*time.Second, "the relay streaming", func() (bool, error) {
		if relay.Exited() {
			t.Fatalf("relay exited:\n%s", relay.Output())
		}
		return c.slotStreaming("outboxrelay")
	})
	id := c.insertRow("order", "o-1", "OrderPlaced", `{}`)
	js := c.js()
	c.waitStreamCount(js, 1, 30*time.Second)
	if got := readStream(t, js)[0].Header.Get("Nats-Msg-Id"); got != id {
		t.Errorf("the stream holds event %s, want %s", got, id)
	}
	if strings.Contains(relay.Output(), "publish_via_partition_root") {
		t.Errorf("after the fix, the relay still complains:\n%s", relay.Output())
	}
}

// TestPartitionedCleanup: outbox.cleanup.after on a partitioned outbox
// deletes the rows whose events are stored, and only those. Two partitions
// hold rows at the same physical positions (ctid): the stored events' rows
// in one, rows written while NATS is down in the other.
func TestPartitionedCleanup(t *testing.T) {
	e := newEnv(t)
	partitionOutbox(t, e)
	ctx := context.Background()
	if err := e.pg.Exec(ctx, "ALTER TABLE public.outbox ALTER COLUMN created_at SET DEFAULT now()"); err != nil {
		t.Fatal(err)
	}
	e.writeConfig("outbox:\n  cleanup:\n    after: 3s\n")
	e.startRelay()
	js := e.js()
	w1 := workload{Writers: 2, Aggregates: 20, Events: 300, MaxTx: 10}.run(ctx, t, e.pg)
	e.waitStreamCount(js, w1.Committed(), time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	if err := e.nats.Kill(); err != nil {
		t.Fatal(err)
	}
	// Tomorrow's partition: its rows take the positions today's hold.
	if err := e.pg.Exec(ctx, "ALTER TABLE public.outbox ALTER COLUMN created_at SET DEFAULT now() + interval '1 day'"); err != nil {
		t.Fatal(err)
	}
	w2 := workload{Writers: 2, Aggregates: 20, FirstAgg: 1000, Events: 300, MaxTx: 10}.run(ctx, t, e.pg)
	testenv.WaitFor(t, 30*time.Second, "the stored events' rows deleted", func() (bool, error) {
		n := partitionRows(t, e)["outbox_day0"]
		return n == 0, fmt.Errorf("%d rows left in outbox_day0", n)
	})
	if n := partitionRows(t, e)["outbox_day1"]; n != w2.Committed() {
		t.Fatalf("with NATS down, outbox_day1 holds %d rows, want all %d unpublished rows kept", n, w2.Committed())
	}
	if err := e.nats.Start(); err != nil {
		t.Fatal(err)
	}
	js = e.js()
	w := merge(w1, w2)
	e.waitStreamCount(js, w.Committed(), time.Minute)
	testenv.WaitFor(t, 30*time.Second, "rows deleted once published", func() (bool, error) {
		n, err := e.rows()
		return n == 0, err
	})
	verify(t, readStream(t, js), w)
}
