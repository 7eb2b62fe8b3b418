package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// nodeExample returns the directory of the nats.js example with its npm
// packages installed (npm ci, once per package-lock.json change).
func nodeExample(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the nats.js example (examples/nats-js) needs Node.js 18 or later and npm: apt-get install nodejs npm", tool)
		}
	}
	dir, err := filepath.Abs(filepath.Join("..", "examples", "nats-js"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	// npm ci writes node_modules/.package-lock.json last: when it is newer
	// than the lock file, the install is complete and current.
	if inst, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !inst.ModTime().Before(lock.ModTime()) {
		return dir
	}
	start := time.Now()
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--prefer-offline")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	t.Logf("npm ci in examples/nats-js took %s", time.Since(start).Round(100*time.Millisecond))
	return dir
}

// jsEvent is one event as consume.mjs prints it.
type jsEvent struct {
	Seq           uint64          `json:"seq"`
	Subject       string          `json:"subject"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	CommitLSN     string          `json:"commit_lsn"`
	TxSeq         string          `json:"tx_seq"`
	Payload       json.RawMessage `json:"payload"`
}

// TestNodeConsumer: the nats.js example (examples/nats-js/consume.mjs), a
// consumer in another language, reads the relay's events: orders as the
// demo writes them, then concurrent writers' events whose aggregate ids
// need escaping in subjects. It checks subjects, headers and order itself;
// this test checks that it saw every event once, with the ids, types,
// aggregates and payloads written, each aggregate's in order.
func TestNodeConsumer(t *testing.T) {
	dir := nodeExample(t)
	e := newEnv(t)
	e.startRelay()

	type want struct {
		typ, aggType, aggID, payload string
		n                            int // the event's place in its aggregate
	}
	wants := map[string]want{}
	next := map[string]int{}
	for i, o := range []struct{ id, event, status string }{
		{"o-1", "OrderCreated", "created"}, {"o-2", "OrderCreated", "created"}, {"o-1", "OrderPaid", "paid"},
		{"o-2", "OrderCancelled", "cancelled"}, {"o-1", "OrderShipped", "shipped"},
	} {
		payload := fmt.Sprintf(`{"order_id": %q, "customer": "c-%d", "total": %d.50, "status": %q}`, o.id, i%2, 10*(i+1), o.status)
		id := e.insertRow("order", o.id, o.event, payload)
		next["order/"+o.id]++
		wants[id] = want{o.event, "order", o.id, payload, next["order/"+o.id]}
	}
	w := workload{Writers: 4, Aggregates: 40, FirstAgg: 100, Events: 1_000, MaxTx: 10, Rollback: 0.1}.run(context.Background(), t, e.pg)
	for id, ev := range w.committed {
		wants[id] = want{ev.Type, ev.AggType, ev.AggID, ev.Payload, ev.N}
	}
	e.waitStreamCount(e.js(), len(wants), time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "consume.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NATS_URL="+e.natsURL, "STREAM="+stream, "EXPECT="+strconv.Itoa(len(wants)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		// Its problem lines, if any, are reported below.
		t.Errorf("node consume.mjs: %v\nlast lines of its output:\n%s\nstderr:\n%s", err, lastLines(out, 5), stderr.String())
	}
	t.Logf("node consume.mjs read %d events in %s", len(wants), time.Since(start).Round(100*time.Millisecond))

	seen := map[string]bool{}
	place := map[string]int{}
	var summary map[string]int
	problems := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Event   *jsEvent
			Problem map[string]any
			Summary map[string]int
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("consume.mjs printed %q: %v", sc.Text(), err)
		}
		switch {
		case line.Problem != nil:
			if problems++; problems <= 5 {
				t.Errorf("consume.mjs found a problem: %v", line.Problem)
			}
		case line.Summary != nil:
			summary = line.Summary
		case line.Event != nil:
			ev := line.Event
			wt, ok := wants[ev.ID]
			if !ok || seen[ev.ID] {
				t.Fatalf("consume.mjs printed event %q (sequence %d): unknown, or twice", ev.ID, ev.Seq)
			}
			seen[ev.ID] = true
			if ev.Type != wt.typ || ev.AggregateType != wt.aggType || ev.AggregateID != wt.aggID {
				t.Errorf("event %s: type %q, aggregate %q/%q; want %q, %q/%q", ev.ID, ev.Type, ev.AggregateType, ev.AggregateID, wt.typ, wt.aggType, wt.aggID)
			}
			var got, exp any
			if err := json.Unmarshal(ev.Payload, &got); err != nil {
				t.Fatalf("event %s: payload %s: %v", ev.ID, ev.Payload, err)
			}
			if err := json.Unmarshal([]byte(wt.payload), &exp); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("event %s: payload %s, want %s", ev.ID, ev.Payload, wt.payload)
			}
			key := wt.aggType + "/" + wt.aggID
			if wt.n != place[key]+1 {
				t.Errorf("aggregate %s: event %d of it follows event %d", key, wt.n, place[key])
			}
			place[key] = wt.n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	aggs := map[string]bool{}
	for _, wt := range wants {
		aggs[wt.aggType+"/"+wt.aggID] = true
	}
	wantSummary := map[string]int{"events": len(wants), "aggregates": len(aggs), "duplicates": 0, "problems": 0}
	if !reflect.DeepEqual(summary, wantSummary) {
		t.Errorf("consume.mjs summary %v, want %v", summary, wantSummary)
	}
	if len(seen) != len(wants) {
		t.Errorf("consume.mjs printed %d of the %d events", len(seen), len(wants))
	}
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}
