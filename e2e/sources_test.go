package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// sourceEnv starts an environment whose events are written the way how
// says, with the matching relay config.
func sourceEnv(t *testing.T, how via) *env {
	t.Helper()
	e := newEnv(t)
	switch how {
	case viaMessages:
		// No outbox table is involved: drop it, so a relay that still read
		// the table could not pass.
		if err := e.pg.Exec(context.Background(), "DROP TABLE outbox"); err != nil {
			t.Fatal(err)
		}
		e.writeConfig(messagesConfig)
	case viaTwoTables:
		if err := e.pg.Exec(context.Background(), "CREATE TABLE outbox2 (LIKE outbox INCLUDING ALL)"); err != nil {
			t.Fatal(err)
		}
		e.writeConfig(twoTablesConfig)
	}
	return e
}

// TestDeliveryMessages: events written with pg_logical_emit_message, some
// in rolled-back transactions, arrive exactly once and in commit order.
func TestDeliveryMessages(t *testing.T) {
	testDeliveryVia(t, viaMessages)
}

// TestDeliveryTwoTables: two outbox tables in one relay, one slot and one
// stream, mixed within transactions; each table has its own subject prefix,
// and the order across both is commit order.
func TestDeliveryTwoTables(t *testing.T) {
	testDeliveryVia(t, viaTwoTables)
}

func testDeliveryVia(t *testing.T, how via) {
	e := sourceEnv(t, how)
	e.startRelay()
	w := workload{Writers: 8, Aggregates: 200, Events: 5_000, MaxTx: 50, Rollback: 0.1, Via: how}.run(context.Background(), t, e.pg)
	js := e.js()
	e.waitStreamCount(js, w.Committed(), 2*time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	verify(t, readStream(t, js), w)
}

// TestRelayKill9Messages and TestRelayKill9TwoTables: the relay is killed
// with kill -9 at random moments under load, as in TestRelayKill9, with
// the stream's duplicate window too short to hide a resend.
func TestRelayKill9Messages(t *testing.T) {
	testKill9Via(t, viaMessages)
}

func TestRelayKill9TwoTables(t *testing.T) {
	testKill9Via(t, viaTwoTables)
}

func testKill9Via(t *testing.T, how via) {
	e := sourceEnv(t, how)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.js().CreateStream(ctx, jetstream.StreamConfig{
		Name:       stream,
		Subjects:   []string{"outbox.>", "billing.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 100 * time.Millisecond,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	e.startRelay()
	wl := faultLoad(40 * time.Millisecond)
	wl.Events, wl.Via = soak*10_000, how
	e.killRelayUnderLoad(wl, 3, soak*5)
}
