package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestReusedID: an event id is used twice within the stream's duplicate
// window (insert-then-delete with a deterministic id, then the same id
// again). JetStream answers the second publish as a duplicate; the relay
// must not take that for "stored". In halt mode it halts at the second
// event, naming the id and the sequence that holds it, and the slot stays
// before it; with dead_letter the second event goes to the dead-letter
// subject with the reason, and every later event is published.
func TestReusedID(t *testing.T) {
	for _, mode := range []string{"halt", "dead_letter"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			e.writeConfig("errors:\n  invalid_event: " + mode + "\n")
			js := e.js()
			relay := e.startRelay()
			ctx := context.Background()
			const reused = "6f0c1d2e-0000-4000-8000-00000000abcd"
			insert := func(id string, n int, deleted bool) {
				t.Helper()
				for i := range n {
					conn, err := e.pg.Connect(ctx)
					if err != nil {
						t.Fatal(err)
					}
					tx, err := conn.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					rowID := id
					if rowID == "" {
						if err := tx.QueryRow(ctx, "SELECT gen_random_uuid()::text").Scan(&rowID); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := tx.Exec(ctx, "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1::uuid, 'order', $2, 'created', '{}')", rowID, fmt.Sprint("o-", i)); err != nil {
						t.Fatal(err)
					}
					if deleted {
						if _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE id = $1::uuid", rowID); err != nil {
							t.Fatal(err)
						}
					}
					if err := tx.Commit(ctx); err != nil {
						t.Fatal(err)
					}
					conn.Close(ctx)
				}
			}
			insert("", 50, false)
			insert(reused, 1, true)
			insert("", 20, false)
			e.waitStreamCount(js, 71, time.Minute)
			insert(reused, 1, true) // the same id again
			afterReuse := e.currentLSN()
			insert("", 30, false)

			if mode == "halt" {
				testenv.WaitFor(t, 30*time.Second, "the relay halted at the reused id", func() (bool, error) {
					code, body, err := e.readyz()
					return code == 503 && strings.Contains(body, "was already used by stream sequence 51"), fmt.Errorf("readyz %d %q %v", code, body, err)
				})
				if n, _ := streamCount(ctx, js); n != 71 {
					t.Fatalf("stream holds %d messages after the halt, want 71: nothing after the reused id may be published", n)
				}
				if confirmed, _ := e.slotLSNs(); confirmed >= afterReuse {
					t.Fatalf("slot confirmed to %s, past the reused id's transaction (committed before %s)", confirmed, afterReuse)
				}
				if err := relay.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if code, err := relay.Wait(40 * time.Second); err != nil || code != 1 {
					t.Fatalf("halted relay: exit %d, %v", code, err)
				}
				e.writeConfig("errors:\n  invalid_event: dead_letter\n")
				e.startRelay()
			}
			e.waitStreamCount(js, 102, time.Minute)
			msgs := readStream(t, js)
			dead := msgs[71]
			if dead.Subject != "outbox.dead_letter" || !strings.Contains(dead.Header.Get("Outbox-Error"), fmt.Sprintf("id %q was already used by stream sequence 51", reused)) {
				t.Fatalf("message 72: subject %q, Outbox-Error %q; want the reused id dead-lettered with the reason", dead.Subject, dead.Header.Get("Outbox-Error"))
			}
			if want := reused + "@" + dead.Header.Get("Outbox-Commit-LSN") + "#1"; dead.Header.Get("Nats-Msg-Id") != want {
				t.Fatalf("dead letter's Nats-Msg-Id = %q, want its own, %q", dead.Header.Get("Nats-Msg-Id"), want)
			}
			if dead.Header.Get("Outbox-Event-Id") != reused {
				t.Fatalf("dead letter's Outbox-Event-Id = %q, want %q", dead.Header.Get("Outbox-Event-Id"), reused)
			}
			seen := map[string]bool{}
			var last pglogrepl.LSN
			for i, m := range msgs {
				id := m.Header.Get("Outbox-Event-Id")
				lsn, _ := pglogrepl.ParseLSN(m.Header.Get("Outbox-Commit-LSN"))
				if lsn <= last {
					t.Fatalf("message %d at %s does not follow %s", i+1, lsn, last)
				}
				last = lsn
				if i != 71 && seen[id] {
					t.Fatalf("message %d repeats event %s", i+1, id)
				}
				seen[id] = true
			}
		})
	}
}
