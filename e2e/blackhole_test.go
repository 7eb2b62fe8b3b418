package e2e_test

// Network partitions: the relay reaches Postgres and NATS through proxies
// that can freeze a link (no bytes either way, no reset) while writers
// run, and during session setup.

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// blackholeBound is the documented bound: a silent link makes /readyz 503
// within it, and after the link heals everything arrives within it
// (docs/operations.md, "Outages").
const blackholeBound = 30 * time.Second

func TestBlackholes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pg, nats bool          // which links freeze
		setup    bool          // freeze the Postgres link while the relay restarts its session
		frozen   time.Duration // how long
	}{
		{name: "postgres", pg: true, frozen: 40 * time.Second},
		{name: "nats", nats: true, frozen: 40 * time.Second},
		{name: "both", pg: true, nats: true, frozen: 40 * time.Second},
		{name: "session setup", setup: true, frozen: 40 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pgp := testenv.StartProxy(t, "127.0.0.1:"+strconv.Itoa(e.pg.Port()))
			np := testenv.StartProxy(t, "127.0.0.1:"+strconv.Itoa(e.nats.Port()))
			url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pgp.Port())
			writeFile(t, e.cfgPath, relayConfig{PGURL: url, NATSURL: "nats://" + np.Addr(), HTTP: e.httpAddr}.yaml())
			e.createStream()
			relay := e.startRelay()
			l := faultLoad(60*time.Millisecond).start(context.Background(), e.pg)
			time.Sleep(2 * time.Second) // events flowing

			if tc.setup {
				// The relay loses its replication connection; the link is
				// frozen as it reconnects, so its session setup meets a
				// silent link.
				pgp.Freeze()
				if err := e.pg.Exec(context.Background(), "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'outboxrelay'"); err != nil {
					t.Fatal(err)
				}
			} else {
				if tc.pg {
					pgp.Freeze()
				}
				if tc.nats {
					np.Freeze()
				}
			}
			frozenAt := time.Now()
			testenv.WaitFor(t, blackholeBound, "/readyz 503 after the freeze", func() (bool, error) {
				ok, err := e.ready()
				return !ok && err == nil, err
			})
			t.Logf("%s: /readyz 503 %s after the freeze", tc.name, time.Since(frozenAt).Round(100*time.Millisecond))
			for time.Since(frozenAt) < tc.frozen {
				if relay.Exited() {
					t.Fatalf("the relay exited while a link was frozen:\n%s", relay.Output())
				}
				time.Sleep(time.Second) // sampling: the relay must stay up
			}
			pgp.Thaw()
			np.Thaw()
			healed := time.Now()
			testenv.WaitFor(t, blackholeBound, "/readyz 200 after the heal", func() (bool, error) {
				return e.ready()
			})
			t.Logf("%s: streaming again %s after the heal", tc.name, time.Since(healed).Round(100*time.Millisecond))
			// The slot must never have passed an event the stream lacks: a
			// relay started after kill -9 replays from the slot, so such an
			// event would be missing at the end.
			if err := relay.Kill(); err != nil {
				t.Fatal(err)
			}
			e.startRelay()
			w := e.finish(l)
			t.Logf("%s: %d events committed; frozen %s", tc.name, w.Committed(), tc.frozen)
		})
	}
}
