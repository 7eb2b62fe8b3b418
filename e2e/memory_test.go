package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// TestLargePayloadsNATSDown (I4): with nats-server down, a backlog of large
// events keeps the relay's memory bounded in bytes, not in messages: the
// relay stops reading from Postgres once its byte budgets are full. When
// nats-server is back every event arrives once, in commit order.
func TestLargePayloadsNATSDown(t *testing.T) {
	const (
		events  = 3000
		perTx   = 10
		md5s    = 6400      // 32 hex characters each: a payload of about 200 KB
		payload = md5s * 32 // the hex string's length
		budget  = 96 << 20  // the product's RSS target for this backlog (docs/design.md, I4)
	)
	e := newEnv(t)
	relay := testenv.StartProcess(t, buildPlainRelay(t), "run", "-config", e.cfgPath)
	testenv.WaitFor(t, 30*time.Second, "relay ready", func() (bool, error) {
		if relay.Exited() {
			return false, fmt.Errorf("relay exited:\n%s", relay.Output())
		}
		return e.ready()
	})
	mem := sampleMemory(t, relay.Pid())
	idle := mem.rss()
	if err := e.nats.Kill(); err != nil {
		t.Fatal(err)
	}

	// Random hex, so nothing on the way compresses it; "n" is the event's
	// place in commit order.
	ctx := context.Background()
	start := e.currentLSN()
	for tx := 0; tx < events/perTx; tx++ {
		err := e.pg.Exec(ctx, fmt.Sprintf(`INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
			SELECT 'order', 'agg-' || (n %% 7), 'created', jsonb_build_object('n', n,
				'r', (SELECT string_agg(md5(random()::text || n || k), '') FROM generate_series(1, %d) AS k))
			FROM generate_series(%d, %d) AS n ORDER BY n`, md5s, tx*perTx+1, (tx+1)*perTx))
		if err != nil {
			t.Fatalf("insert transaction %d: %v", tx, err)
		}
	}
	end := e.currentLSN()
	t.Logf("committed %d events of %d KB in %d transactions: %.0f MiB of WAL", events, payload>>10, events/perTx, mib(uint64(end-start)))

	// Wait until the relay reads no more: its walsender's sent position
	// stays put for 3 s (all sent, or the relay stopped reading).
	var sent pglogrepl.LSN
	since := time.Now()
	testenv.WaitFor(t, 3*time.Minute, "the relay to stop reading", func() (bool, error) {
		if relay.Exited() {
			return false, fmt.Errorf("relay exited:\n%s", relay.Output())
		}
		now := e.sentLSN()
		if now != sent {
			sent, since = now, time.Now()
		}
		return time.Since(since) >= 3*time.Second, fmt.Errorf("sent position %s", sent)
	})
	_, downHWM, err := procMemory(relay.Pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nats-server down: the walsender sent %.0f of %.0f MiB and waits; relay VmHWM %.1f MiB",
		mib(uint64(sent-start)), mib(uint64(end-start)), mib(downHWM))

	if err := e.nats.Start(); err != nil {
		t.Fatal(err)
	}
	js := e.js()
	e.waitStreamCount(js, events, 3*time.Minute)
	e.waitConfirmedPast(end, time.Minute)
	peakRSS, peakHWM := mem.stop()
	t.Logf("relay RSS: %.1f MiB idle, peak %.1f MiB sampled, VmHWM %.1f MiB with nats-server down and %.1f MiB in all (budget %d MiB)",
		mib(idle), mib(peakRSS), mib(downHWM), mib(peakHWM), budget>>20)
	checkLargePayloads(t, e, js, events, payload)
	if peakHWM > budget {
		t.Errorf("relay peak RSS %.1f MiB is over %d MiB for %d queued events of %d KB: memory grows with the backlog's bytes (I4)",
			mib(peakHWM), budget>>20, events, payload>>10)
	}
}

// checkLargePayloads reads the stream without keeping the messages: events
// messages at sequences 1..events, "n" 1..events in stream order, each
// row's id once.
func checkLargePayloads(t *testing.T, e *env, js jetstream.JetStream, events, size int) {
	t.Helper()
	ids := tableIDs(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for n < events {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetch after %d messages: %v", n, err)
		}
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if md.Sequence.Stream != uint64(n) {
				t.Fatalf("message %d has stream sequence %d", n, md.Sequence.Stream)
			}
			var p struct {
				N int    `json:"n"`
				R string `json:"r"`
			}
			if err := json.Unmarshal(m.Data(), &p); err != nil {
				t.Fatalf("message %d: payload: %v", n, err)
			}
			if p.N != n || len(p.R) != size {
				t.Fatalf("message %d: payload n = %d with %d characters, want n = %d with %d", n, p.N, len(p.R), n, size)
			}
			id := m.Headers().Get(sink.HeaderMsgID)
			if _, ok := ids[id]; !ok {
				t.Fatalf("message %d: id %q is not a row of the outbox, or came twice", n, id)
			}
			delete(ids, id)
		}
		if err := batch.Error(); err != nil && n < events {
			t.Fatalf("fetch after %d messages: %v", n, err)
		}
	}
	if len(ids) != 0 {
		t.Fatalf("%d rows never reached the stream", len(ids))
	}
	info, err := streamInfo(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(events) {
		t.Fatalf("stream holds %d messages, want exactly %d", info.State.Msgs, events)
	}
	t.Logf("stream: %d messages in commit order, every row's id once", n)
}

// sentLSN returns the relay's walsender's sent position (0/0 when it has
// none).
func (e *env) sentLSN() pglogrepl.LSN {
	e.t.Helper()
	conn, err := e.pg.Connect(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	err = conn.QueryRow(context.Background(),
		"SELECT coalesce(max(sent_lsn), '0/0')::text FROM pg_stat_replication WHERE application_name = 'outboxrelay'").Scan(&s)
	if err != nil {
		e.t.Fatalf("read the walsender's sent position: %v", err)
	}
	lsn, _ := pglogrepl.ParseLSN(s)
	return lsn
}
