package e2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestStandbyRoundTrip (A -> B -> A, with A a zombie in between): relay A
// reaches Postgres and NATS through proxies. Its NATS link freezes while a
// large transaction streams, so A holds part of it, unpublished, with the
// transaction open. Then its Postgres link freezes too; Postgres ends the
// silent session after wal_sender_timeout, and standby B takes the slot,
// publishes everything and confirms past it. A's NATS link heals while A is
// still cut from Postgres and B holds the slot: A settles what it held from
// the stream. B stops; A's Postgres link heals, and A takes the slot back,
// past the transaction it had open: it streams on without halting. The
// stream holds every event exactly once, in commit order.
//
// B's sink resumed when B started, before A stored the first events: the
// epoch's probe (sink/send.go) keeps that stale view from losing any.
func TestStandbyRoundTrip(t *testing.T) {
	p := startPair(t)
	e, js, pgp, np, a, b, addrB := p.e, p.js, p.pgp, p.np, p.a, p.b, p.addrB

	ctx := context.Background()
	first := workload{Writers: 2, Aggregates: 20, Events: 500, MaxTx: 10}.run(ctx, t, e.pg)
	e.waitStreamCount(js, first.Committed(), time.Minute)

	np.Freeze()
	big := workload{Writers: 1, Aggregates: 50, FirstAgg: 1000, Events: 60_000, MaxTx: 60_000}.run(ctx, t, e.pg)
	// A reads part of the transaction, until its publish window and its
	// buffers are full.
	testenv.WaitFor(t, time.Minute, "relay A holding part of the large transaction", func() (bool, error) {
		m := e.metrics()
		return grepLines(m, "outboxrelay_events_in_flight ") != "outboxrelay_events_in_flight 0", fmt.Errorf("%s", grepLines(m, "outboxrelay_events_in_flight "))
	})
	time.Sleep(2 * time.Second) // let A fill up; it cannot finish: its window is smaller than the transaction
	// Postgres ends the silent session after wal_sender_timeout.
	pgp.Freeze()
	testenv.WaitFor(t, time.Minute, "relay B streaming", func() (bool, error) {
		return testenv.RelayReady(addrB)
	})
	after := workload{Writers: 2, Aggregates: 20, FirstAgg: 2000, Events: 500, MaxTx: 10}.run(ctx, t, e.pg)
	w := merge(first, big, after)
	waitAllOrSayMissing(t, js, w)
	e.waitConfirmedPast(e.currentLSN(), time.Minute) // B confirmed past the large transaction
	// A, still cut from Postgres, is back on NATS while B holds the slot:
	// what it holds is in the stream already.
	np.Thaw()
	testenv.WaitFor(t, time.Minute, "relay A settled what it held", func() (bool, error) {
		m := e.metrics()
		return grepLines(m, "outboxrelay_events_in_flight ") == "outboxrelay_events_in_flight 0", fmt.Errorf("%s", grepLines(m, "outboxrelay_events_in_flight "))
	})

	if err := b.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := b.Wait(40 * time.Second); err != nil || code != 0 {
		t.Fatalf("relay B after SIGTERM: exit %d, %v\n%s", code, err, b.Output())
	}
	pgp.Thaw()
	testenv.WaitFor(t, time.Minute, "relay A streaming again", func() (bool, error) {
		if a.Exited() {
			t.Fatalf("relay A exited:\n%s", a.Output())
		}
		return e.ready()
	})
	last := workload{Writers: 2, Aggregates: 20, FirstAgg: 3000, Events: 500, MaxTx: 10}.run(ctx, t, e.pg)
	w = merge(w, last)
	e.waitStreamCount(js, w.Committed(), time.Minute)
	e.waitConfirmedPast(e.currentLSN(), time.Minute)
	if ok, err := e.ready(); !ok {
		t.Fatalf("relay A is not ready after taking the slot back (halted?): %v\n%s", err, a.Output())
	}
	verify(t, readStream(t, js), w)
}

// pair is relay A, which reaches Postgres and NATS through proxies that can
// freeze its links, and standby relay B, direct, on the same slot and
// stream; Postgres ends a silent session after a 10 s wal_sender_timeout.
type pair struct {
	e       *env
	js      jetstream.JetStream
	pgp, np *testenv.Proxy
	a, b    *testenv.Process
	addrB   string // B's HTTP address
}

// startPair starts a pair, A streaming and B waiting as a standby.
func startPair(t *testing.T) *pair {
	t.Helper()
	// Postgres ends the walsender of A's silent session after
	// wal_sender_timeout, and only then is the slot free for B
	// (docs/operations.md, "Outages").
	n := testenv.StartNATS(t)
	e := newEnvWith(t, n, n.URL(), testenv.PostgresOptions{Settings: map[string]string{"wal_sender_timeout": "10s"}})
	p := &pair{e: e, js: e.js()}
	e.createStream()
	p.pgp = testenv.StartProxy(t, "127.0.0.1:"+strconv.Itoa(e.pg.Port()))
	p.np = testenv.StartProxy(t, "127.0.0.1:"+strconv.Itoa(e.nats.Port()))
	writeFile(t, e.cfgPath, relayConfig{PGURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&application_name=relay_a", p.pgp.Port()),
		NATSURL: "nats://" + p.np.Addr(), HTTP: e.httpAddr}.yaml())
	p.a = e.startRelay()

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p.addrB = "127.0.0.1:" + strconv.Itoa(port)
	cfgB := filepath.Join(t.TempDir(), "relay-b.yaml")
	e.writeConfigTo(cfgB, p.addrB, "")
	p.b = testenv.StartProcess(t, e.bin, "run", "-config", cfgB)
	if err := p.b.WaitForOutput(standbyLine, 30*time.Second); err != nil {
		t.Fatalf("relay B does not wait as a standby: %v\n%s", err, p.b.Output())
	}
	return p
}

// waitAllOrSayMissing waits up to 2 minutes for the stream to hold every
// committed event of w; if it does not, it fails t, naming what is missing.
func waitAllOrSayMissing(t *testing.T, js jetstream.JetStream, w *written) {
	t.Helper()
	if err := testenv.Poll(2*time.Minute, func() (bool, error) {
		n, err := streamCount(context.Background(), js)
		return n >= uint64(w.Committed()), err
	}); err != nil {
		verify(t, readStream(t, js), w) // says what is missing
		t.Fatalf("the stream does not hold every event: %v", err)
	}
}
