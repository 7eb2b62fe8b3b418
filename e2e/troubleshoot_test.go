package e2e_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// The NATS and JetStream states of docs/troubleshooting.md, with
// the check harness of check_test.go; the Postgres ones are there.

// TestTroubleshootUpdateIgnored (docs/troubleshooting.md): an UPDATE of an
// outbox row is not an event. The relay says so once, in its log, and
// publishes only the insert.
func TestTroubleshootUpdateIgnored(t *testing.T) {
	e := newEnv(t)
	relay := e.startRelay()
	js := e.js()
	id := e.insertRow("order", "o-1", "created", `{"n": 1}`)
	e.waitStreamCount(js, 1, 30*time.Second)
	for i := 0; i < 2; i++ {
		if err := e.pg.Exec(context.Background(), "UPDATE outbox SET payload = '{\"n\": 2}' WHERE id = $1", id); err != nil {
			t.Fatal(err)
		}
	}
	const warn = `level=WARN msg="an outbox row was updated; updates are ignored, only inserts become events" table=public.outbox`
	if err := relay.WaitForOutput(warn, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Everything up to the updates is confirmed, and nothing else is stored.
	e.waitConfirmedPast(e.currentLSN(), 30*time.Second)
	if n, err := streamCount(context.Background(), js); err != nil || n != 1 {
		t.Errorf("stream holds %d messages (%v), want only the insert", n, err)
	}
	if got := strings.Count(relay.Output(), warn); got != 1 {
		t.Errorf("the relay warned %d times about the updates, want once", got)
	}
}

// TestCheckNATS runs `outboxrelay check` against real nats-servers in each
// state a user can meet (with Postgres ready), and asserts the exact line
// and exit code; for the states run also meets, that run says the same.
func TestCheckNATS(t *testing.T) {
	c := newCheckEnv(t)
	good := c.write(t, checkCfg{})
	js := c.js()
	ctx := context.Background()
	createStream := func(t *testing.T, cfg jetstream.StreamConfig) {
		t.Helper()
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("nats down", func(t *testing.T) {
		url, _ := freeURL(t, "nats")
		cfg := c.write(t, checkCfg{natsURL: url})
		out := c.check(t, cfg, 1)
		wantLines(t, out, "FAIL  nats: connect to NATS at "+url+": nats: no servers available for connection: "+fixNATSDown)
		noLine(t, out, "FAIL  postgres")
		c.runSays(t, cfg, fixNATSDown, nil)
		c.reset(t)
	})

	t.Run("nats wrong password", func(t *testing.T) {
		const natsPassword, wrong = "nats-Pw-93c1", "not-the-nats-pw"
		n := testenv.StartNATS(t, testenv.NATSOptions{
			Config:        "authorization { user: relay, password: " + natsPassword + " }\n",
			ClientOptions: []nats.Option{nats.UserInfo("relay", natsPassword)},
		})
		url := strings.Replace(n.URL(), "nats://", "nats://relay:"+wrong+"@", 1)
		cfg := c.write(t, checkCfg{natsURL: url})
		out := c.check(t, cfg, 1)
		wantLines(t, out, "FAIL  nats: connect to NATS at "+strings.Replace(url, wrong, "xxxxx", 1)+": nats: Authorization Violation: "+fixNATSAuth)
		if strings.Contains(out, wrong) || strings.Contains(out, natsPassword) {
			t.Errorf("check printed a NATS password:\n%s", out)
		}
		c.runSays(t, cfg, fixNATSAuth, nil)
		c.reset(t)
	})

	t.Run("jetstream disabled", func(t *testing.T) {
		bin, err := testenv.NATSServerBinary()
		if err != nil {
			t.Fatal(err)
		}
		url, port := freeURL(t, "nats")
		testenv.StartProcess(t, bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port))
		testenv.WaitFor(t, 30*time.Second, "nats-server without JetStream up", func() (bool, error) {
			nc, err := nats.Connect(url, nats.NoReconnect())
			if err == nil {
				nc.Close()
			}
			return err == nil, err
		})
		cfg := c.write(t, checkCfg{natsURL: url})
		out := c.check(t, cfg, 1)
		const noJS = "nats: API error: code=503 err_code=10076 description=jetstream not enabled: JetStream is not enabled on the NATS server: start nats-server with -js, or add a jetstream {} block to its configuration"
		wantLines(t, out, "FAIL  nats jetstream: read the account's JetStream info: "+noJS)
		c.runSays(t, cfg, `look up stream "OUTBOX": nats: no responders available for request: JetStream is not enabled on the NATS server: start nats-server with -js, or add a jetstream {} block to its configuration`, nil)
		c.reset(t)
	})

	t.Run("stream does not cover the subjects", func(t *testing.T) {
		createStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"other.>"}})
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  nats stream OUTBOX: "+notCovered)
		c.runSays(t, good, notCovered, nil) // the continuity check reads the stream before streaming
		c.reset(t)
	})

	t.Run("stream shared", func(t *testing.T) {
		createStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"outbox.>"}})
		if _, err := js.Publish(ctx, "outbox.billing.7", []byte("not the relay's")); err != nil {
			t.Fatal(err)
		}
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  nats stream OUTBOX: "+sharedStream)
		c.runSays(t, good, sharedStream, nil) // the continuity check reads the stream before streaming
		c.reset(t)
	})

	t.Run("stream sources another stream", func(t *testing.T) {
		createStream(t, jetstream.StreamConfig{Name: "SHARD2", Subjects: []string{"shard2.>"}})
		createStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"outbox.>"}, Sources: []*jetstream.StreamSource{{Name: "SHARD2"}}})
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  nats stream OUTBOX: "+sourcesOthers)
		c.runSays(t, good, sourcesOthers, nil)
		c.reset(t)
	})

	t.Run("stream subjects taken by another stream", func(t *testing.T) {
		createStream(t, jetstream.StreamConfig{Name: "BILLING", Subjects: []string{"outbox.billing.>"}})
		const overlaps = `its subject "outbox.>" overlaps subject "outbox.billing.>" of stream "BILLING": change the subject templates (nats.subject) or that stream's subjects, or point nats.stream at stream "BILLING" if it is the relay's`
		out := c.check(t, good, 1)
		wantLines(t, out, "FAIL  nats stream OUTBOX: does not exist, and the relay cannot create it: "+overlaps)
		c.runSays(t, good, `create stream "OUTBOX" with subjects [outbox.>]: nats: API error: code=400 err_code=10065 description=subjects overlap with an existing stream: `+overlaps, nil)
		c.reset(t)
	})

	t.Run("WorkQueue retention", func(t *testing.T) {
		createStream(t, jetstream.StreamConfig{Name: stream, Subjects: []string{"outbox.>"}, Retention: jetstream.WorkQueuePolicy})
		out := c.check(t, good, 0)
		wantLines(t, out,
			"ok    nats stream OUTBOX: subjects [outbox.>], WorkQueue retention, File storage, 1 replicas, duplicate window 2m0s, max_msg_size unlimited, 0 messages; empty",
			"warn  nats stream OUTBOX: has WorkQueue retention: consumed messages are removed, so after a restart the relay may not find its last message, and exactly-once then rests on the duplicate window (2m0s) alone: give the relay a stream with limits retention, and let consumers read it through their own consumers (or a WorkQueue stream that sources it)",
			"ready, 2 warnings")
		// A consumer takes the relay's event; after a restart the relay
		// finds its last message gone, and says what it falls back to.
		relay := testenv.StartProcess(t, c.bin, "run", "-config", good)
		c.whenStreaming(t, "outboxrelay", "{}")()
		cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := relay.Kill(); err != nil {
			t.Fatal(err)
		}
		out = c.check(t, good, 0)
		wantLines(t, out, "ok    nats stream OUTBOX: subjects [outbox.>], WorkQueue retention, File storage, 1 replicas, duplicate window 2m0s, max_msg_size unlimited, 0 messages; last message (sequence 1) is gone")
		c.runSays(t, good, "the stream's last message is gone (WorkQueue or Interest retention, or a purge); exactly-once now relies on the stream's duplicate window", nil)
		c.reset(t)
	})

	t.Run("the relay's own stream", func(t *testing.T) {
		relay := testenv.StartProcess(t, c.bin, "run", "-config", good)
		c.whenStreaming(t, "outboxrelay", "{}")()
		c.waitStreamCount(js, 1, 30*time.Second)
		if err := relay.Kill(); err != nil {
			t.Fatal(err)
		}
		out := c.check(t, good, 0)
		if !strings.Contains(out, "ok    nats stream OUTBOX: subjects [outbox.>], Limits retention, File storage, 1 replicas, duplicate window 2m0s, max_msg_size unlimited, 1 messages; last message (sequence 1) is the relay's, at ") {
			t.Errorf("check does not recognise the relay's stream:\n%s", out)
		}
		c.reset(t)
	})

	t.Run("max_payload small", func(t *testing.T) {
		n := testenv.StartNATS(t, testenv.NATSOptions{Config: "max_payload: 4096\n"})
		cfg := c.write(t, checkCfg{natsURL: n.URL()})
		out := c.check(t, cfg, 0)
		wantLines(t, out, "warn  nats max_payload: 4096 bytes, below NATS's default of 1 MiB: an event whose payload and headers are larger halts the relay (errors.invalid_event: halt): raise max_payload in the nats-server configuration if outbox payloads can be that large")
		// run halts at such an event, naming it and the limit.
		big := `{"pad": "` + strings.Repeat("x", 5000) + `"}`
		c.runSays(t, cfg, "is over the server's max_payload of 4096 bytes", c.whenStreaming(t, "outboxrelay", big))
		c.reset(t)
	})
}
