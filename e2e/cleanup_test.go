package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestCleanup: with outbox.cleanup.after, rows whose events are stored are
// deleted, and rows whose events are not (NATS is down) are kept until
// they are.
func TestCleanup(t *testing.T) {
	e := newEnv(t)
	e.writeConfig("outbox:\n  cleanup:\n    after: 1s\n")
	e.startRelay()
	ctx := context.Background()
	w1 := workload{Writers: 4, Aggregates: 100, Events: 2_000, MaxTx: 20, Rollback: 0.1}.run(ctx, t, e.pg)
	js := e.js()
	e.waitStreamCount(js, w1.Committed(), time.Minute)
	testenv.WaitFor(t, 30*time.Second, "confirmed rows deleted", func() (bool, error) {
		n, err := e.rows()
		return n == 0, err
	})

	// NATS goes away: nothing new is confirmed, so nothing new is deleted.
	if err := e.nats.Kill(); err != nil {
		t.Fatal(err)
	}
	w2 := workload{Writers: 2, Aggregates: 50, FirstAgg: 1000, Events: 500, MaxTx: 10}.run(ctx, t, e.pg)
	time.Sleep(5 * time.Second) // several cleanup ticks past "after"
	if n, err := e.rows(); err != nil || n != w2.Committed() {
		t.Fatalf("with NATS down, the outbox holds %d rows (err %v), want all %d unpublished rows kept", n, err, w2.Committed())
	}

	if err := e.nats.Start(); err != nil {
		t.Fatal(err)
	}
	w := merge(w1, w2)
	e.waitStreamCount(js, w.Committed(), 2*time.Minute)
	testenv.WaitFor(t, 30*time.Second, "rows deleted once published", func() (bool, error) {
		n, err := e.rows()
		return n == 0, err
	})
	verify(t, readStream(t, js), w)
	want := fmt.Sprintf("outboxrelay_cleanup_deleted_rows_total %d\n", w.Committed())
	if m := e.metrics(); !strings.Contains(m, want) {
		t.Errorf("metrics lack %q:\n%s", want, m)
	}
}

// rows counts the rows of the outbox table.
func (e *env) rows() (int, error) {
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&n)
	return n, err
}

// metrics returns the relay's /metrics page.
func (e *env) metrics() string {
	e.t.Helper()
	resp, err := http.Get("http://" + e.httpAddr + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}
