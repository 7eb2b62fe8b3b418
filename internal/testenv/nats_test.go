package testenv_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func connectJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestNATSKillAndRestart(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := connectJS(t, n.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "events.a", []byte("hello")); err != nil {
		t.Fatal(err)
	}

	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	if n.Running() {
		t.Error("Running() = true after Kill")
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	// The client reconnects to the same URL by itself.
	var msg *jetstream.RawStreamMsg
	testenv.WaitFor(t, 10*time.Second, "message 1 after restart", func() (bool, error) {
		s, err := js.Stream(ctx, "EVENTS")
		if err != nil {
			return false, err
		}
		msg, err = s.GetMsg(ctx, 1)
		return err == nil, err
	})
	if got, want := string(msg.Data), "hello"; got != want {
		t.Errorf("message 1 after kill and restart = %q, want %q", got, want)
	}

	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
}

func TestNATSConfig(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t, testenv.NATSOptions{ServerName: "configured", Config: "max_payload: 65536\n"})
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got, want := nc.MaxPayload(), int64(65536); got != want {
		t.Errorf("max payload = %d, want %d from the extra config", got, want)
	}
	if got, want := nc.ConnectedServerName(), "configured"; got != want {
		t.Errorf("server name = %q, want %q", got, want)
	}
}

func TestNATSFreezeThaw(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	js := connectJS(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}

	if err := n.Freeze(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := js.Publish(short, "events.a", []byte("while frozen"))
	cancelShort()
	if err == nil {
		t.Error("publish to a frozen server succeeded")
	}
	if !n.Running() {
		t.Error("Running() = false while frozen")
	}

	if err := n.Thaw(); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "events.a", []byte("after thaw"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != "EVENTS" {
		t.Errorf("ack stream = %q, want EVENTS", ack.Stream)
	}

	// Stop must not hang on a frozen server.
	if err := n.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestNATSCluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := connectJS(t, c.URLs())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "events.a", []byte("one")); err != nil {
		t.Fatal(err)
	}

	// Stepping down is quick; killing the leader would cost a ~5s election.
	old, err := c.StreamLeader(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	leader, err := c.StepDownStream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if leader == old {
		t.Errorf("leader after step-down = %s, the node that stepped down", leader.Name())
	}

	var follower *testenv.NATS
	for _, n := range c.Nodes() {
		if n != leader {
			follower = n
		}
	}
	if err := follower.Kill(); err != nil {
		t.Fatal(err)
	}
	// A publish can go unanswered while the cluster notices the dead node,
	// or while the client reconnects if it was connected to it; a client
	// then sends again, and the message id keeps it to one copy. Seen on a
	// slow machine: one attempt waited out the test's whole minute.
	err = testenv.Poll(40*time.Second, func() (bool, error) {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := js.Publish(attempt, "events.a", []byte("two"), jetstream.WithMsgID("two"))
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("publish with follower %s dead: %v", follower.Name(), err)
	}
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	if err := follower.WaitJetStream(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "restarted follower to be current", func() (bool, error) {
		info, err := s.Info(ctx)
		if err != nil {
			return false, err
		}
		for _, r := range info.Cluster.Replicas {
			if r.Name == follower.Name() {
				return r.Current && !r.Offline && r.Lag == 0, fmt.Errorf("replica %s: current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag)
			}
		}
		return false, fmt.Errorf("%s is not a replica of EVENTS", follower.Name())
	})
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(2); got != want {
		t.Errorf("messages in R3 stream = %d, want %d", got, want)
	}
}

// StartNATSCluster starts a new cluster when a port it picked was taken
// before nats-server bound it, and it recognises that case by this error.
func TestNATSClusterPortTaken(t *testing.T) {
	t.Parallel()
	c, err := testenv.NewNATSCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Kill() })
	ln, err := net.Listen("tcp", strings.TrimPrefix(c.Node("n1").ClusterURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = c.Start()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start with n1's cluster port taken = %v, want an error saying \"address already in use\"", err)
	}
}
