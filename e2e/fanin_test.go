package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// aggregateStream is the stream of the fan-in recipe (docs/fan-in.md) that
// sources every shard's relay stream.
const aggregateStream = "OUTBOX_ALL"

// shard is one database of a fan-in, with its relay and its own stream.
type shard struct {
	*env
	name   string // the relay's stream
	prefix string // of its subjects
}

// newShard starts a Postgres cluster for shard i on the shared nats-server
// and writes its relay's config: its own stream, subject prefix and
// dead-letter subject, so that the streams' subjects are disjoint.
func newShard(t *testing.T, n *testenv.NATS, i int) *shard {
	t.Helper()
	s := &shard{env: newEnvWith(t, n, n.URL()), name: fmt.Sprintf("OUTBOX_SHARD%d", i), prefix: fmt.Sprintf("outbox.shard%d", i)}
	s.writeShardConfig(s.cfgPath, true)
	return s
}

// writeShardConfig writes the shard's relay config to path; without
// ownDeadLetter it keeps the default dead-letter subject, which every relay
// would share.
func (s *shard) writeShardConfig(path string, ownDeadLetter bool) {
	c := relayConfig{PGURL: s.pg.URL(), NATSURL: s.natsURL, HTTP: s.httpAddr, Stream: s.name,
		NATS: fmt.Sprintf("  subject: %q\n", s.prefix+".{aggregate_type}.{aggregate_id}")}
	if ownDeadLetter {
		c.Extra = fmt.Sprintf("errors:\n  dead_letter_subject: %s.dead_letter\n", s.prefix)
	}
	writeFile(s.t, path, c.yaml())
}

// check runs `outboxrelay check` on the config at path and returns its
// output and whether it said ready.
func (s *shard) check(path string) (string, bool) {
	s.t.Helper()
	out, err := exec.Command(s.bin, "check", "-config", path).CombinedOutput()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		s.t.Fatal(err)
	}
	return string(out), err == nil
}

// TestFanIn is the recipe of docs/fan-in.md: two Postgres clusters, two
// relays each with its own stream and subject prefix, and one aggregate
// stream that sources both. Under load on both databases the relays are
// killed with kill -9 and restarted; a consumer of the aggregate stream then
// reads every committed event of both exactly once, each database's in
// commit order, so per-aggregate order is kept.
func TestFanIn(t *testing.T) {
	n := testenv.StartNATS(t)
	shards := []*shard{newShard(t, n, 1), newShard(t, n, 2)}
	js := shards[0].js()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// check validates each relay's part of the fan-in: two relays keeping
	// the default dead-letter subject would share it. The first relay's
	// stream, as it creates it then, takes it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: shards[0].name, Subjects: []string{shards[0].prefix + ".>", "outbox.dead_letter"}}); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(t.TempDir(), "shared-dead-letter.yaml")
	shards[1].writeShardConfig(shared, false)
	out, ok := shards[1].check(shared)
	const deadLetterTaken = `FAIL  nats stream OUTBOX_SHARD2: does not exist, and the relay cannot create it: its dead-letter subject "outbox.dead_letter" overlaps subject "outbox.dead_letter" of stream "OUTBOX_SHARD1": give each relay a dead-letter subject of its own (errors.dead_letter_subject, e.g. "outbox.shard2.dead_letter"), or point nats.stream at stream "OUTBOX_SHARD1" if it is the relay's`
	if ok || !strings.Contains(out, deadLetterTaken) {
		t.Errorf("check with the default dead-letter subject on both relays: want a FAIL line\n%s\ngot:\n%s", deadLetterTaken, out)
	}
	if err := js.DeleteStream(ctx, shards[0].name); err != nil {
		t.Fatal(err)
	}

	var sources []*jetstream.StreamSource
	for _, s := range shards {
		// A duplicate window too short to hide a resend, as in the fault
		// tests: exactly-once must come from the relay's publish chain.
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: s.name, Subjects: []string{s.prefix + ".>"},
			Storage: jetstream.FileStorage, Duplicates: 100 * time.Millisecond}); err != nil {
			t.Fatalf("create stream %s: %v", s.name, err)
		}
		sources = append(sources, &jetstream.StreamSource{Name: s.name})
	}
	// The aggregate stream has no subjects of its own; so short a window
	// that its own deduplication cannot hide a duplicate either.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: aggregateStream, Sources: sources,
		Storage: jetstream.FileStorage, Duplicates: 100 * time.Millisecond}); err != nil {
		t.Fatalf("create stream %s: %v", aggregateStream, err)
	}

	for _, s := range shards {
		out, ok := s.check(s.cfgPath)
		if want := fmt.Sprintf("ok    nats stream %s: sourced by stream %q", s.name, aggregateStream); !ok || !strings.Contains(out, want) {
			t.Errorf("check of %s: want ready and a line %q, got:\n%s", s.name, want, out)
		}
	}

	for _, s := range shards {
		s.startRelay()
	}
	var loads []*load
	for i, s := range shards {
		wl := faultLoad(60 * time.Millisecond)
		wl.Events, wl.FirstAgg = soak*8_000, i*1000 // each database has aggregates of its own
		loads = append(loads, wl.start(context.Background(), s.pg))
	}
	r := rand.New(rand.NewPCG(20, uint64(time.Now().UnixNano())))
	kills := 0
	for _, s := range []*shard{shards[0], shards[1], shards[0], shards[0]} {
		pause(r, 300*time.Millisecond, 2*time.Second)
		if err := s.relay.Kill(); err != nil {
			t.Fatal(err)
		}
		s.startRelay()
		kills++
	}
	loadRunning := !loads[0].finished() && !loads[1].finished()

	want := 0
	var written []*written
	for i, s := range shards {
		w, err := loads[i].wait()
		if err != nil {
			t.Fatal(err)
		}
		// verify expects each event's subject under its prefix.
		for id, ev := range w.committed {
			ev.Prefix = s.prefix
			w.committed[id] = ev
		}
		written = append(written, w)
		want += w.Committed()
	}
	testenv.WaitFor(t, 3*time.Minute, fmt.Sprintf("%d messages in %s", want, aggregateStream), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := streamCountOf(ctx, js, aggregateStream)
		cancel()
		if got > uint64(want) {
			t.Fatalf("%s holds %d messages, more than the %d committed", aggregateStream, got, want)
		}
		return got == uint64(want), fmt.Errorf("%d messages (%v)", got, err)
	})
	for _, s := range shards {
		// Once each slot is confirmed past its last commit, a late
		// duplicate would be in the relay's stream, and sourced, by now.
		s.waitConfirmedPast(s.currentLSN(), time.Minute)
	}

	// The consumer: everything from the aggregate stream, split by source.
	all := readStreamNamed(t, js, aggregateStream)
	bySource := make([][]received, len(shards))
	for _, m := range all {
		k := slices.IndexFunc(shards, func(s *shard) bool { return strings.HasPrefix(m.Subject, s.prefix+".") })
		if k < 0 {
			t.Fatalf("%s, sequence %d: subject %q is under no shard's prefix", aggregateStream, m.Seq, m.Subject)
		}
		s := shards[k]
		if src := strings.Fields(m.Header.Get("Nats-Stream-Source")); len(src) == 0 || src[0] != s.name {
			t.Fatalf("%s, sequence %d: Nats-Stream-Source %q, want it from %s", aggregateStream, m.Seq, m.Header.Get("Nats-Stream-Source"), s.name)
		}
		// JetStream drops the relay's chain header when it sources a
		// message: the aggregate stream's sequences are its own.
		if h := m.Header.Get("Nats-Expected-Last-Sequence"); h != "" {
			t.Fatalf("%s, sequence %d: sourced with Nats-Expected-Last-Sequence %q", aggregateStream, m.Seq, h)
		}
		bySource[k] = append(bySource[k], m)
	}
	for i, s := range shards {
		t.Logf("%s, from %s:", aggregateStream, s.name)
		verify(t, bySource[i], written[i])
	}
	t.Logf("fan-in: %d events from 2 databases in %s; relays killed -9 %d times (load still running after the last kill: %v)", want, aggregateStream, kills, loadRunning)
	if !loadRunning {
		t.Error("a load ended before the kills did: slow the load down so every kill lands under load")
	}
}
