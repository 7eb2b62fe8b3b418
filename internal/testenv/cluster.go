package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of nats-servers on loopback, named n1..nN.
// Each node keeps its ports and store directory across Kill and Start.
type Cluster struct {
	nodes []*NATS
}

// NewNATSCluster prepares n nodes in <dir>/n1 ... <dir>/nN, each routing to
// all the others, without starting them.
func NewNATSCluster(dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("nats cluster of %d nodes: need at least 1", n)
	}
	bin, err := NATSServerBinary()
	if err != nil {
		return nil, err
	}
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		if clusterPorts[i], err = FreePort(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{}
	for i := range n {
		var routes []string
		for j, p := range clusterPorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
			}
		}
		node, err := NewNATS(filepath.Join(dir, fmt.Sprintf("n%d", i+1)), NATSOptions{
			ServerName:  fmt.Sprintf("n%d", i+1),
			ClusterName: "testenv",
			ClusterPort: clusterPorts[i],
			Routes:      routes,
			Binary:      bin,
		})
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, node)
	}
	return c, nil
}

// Start starts every node that is not running and returns once WaitReady
// does.
func (c *Cluster) Start() error {
	// A node's Start returns when its client port accepts, before the meta
	// group forms; starting them together lets the routes connect at once
	// instead of after a retry.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		if n.Running() {
			continue
		}
		wg.Go(func() { errs[i] = n.Start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.WaitReady(30 * time.Second)
}

// probeStream is created and deleted by WaitReady.
const probeStream = "testenv_probe"

// WaitReady polls until every running node answers JetStream requests and
// the meta leader can place a stream on all running nodes: answering alone
// is not enough, as the leader learns of its peers a little later and until
// then refuses an R3 stream with "no suitable peers for placement". It
// proves that by creating and deleting a memory stream named testenv_probe.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	running := 0
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		running++
		if err := n.WaitJetStream(time.Until(deadline)); err != nil {
			return fmt.Errorf("wait for jetstream on %s: %w", n.Name(), err)
		}
	}
	nc, js, err := c.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	err = Poll(time.Until(deadline), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: probeStream, Storage: jetstream.MemoryStorage, Replicas: running,
		})
		if err != nil {
			return false, err
		}
		return true, js.DeleteStream(ctx, probeStream)
	})
	if err != nil {
		return fmt.Errorf("wait for the nats cluster to place an R%d stream: %w", running, err)
	}
	return nil
}

// Kill kills every running node. It is meant for cleanup: it tries all
// nodes and returns the first error.
func (c *Cluster) Kill() error {
	var first error
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		if err := n.Kill(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Nodes returns the nodes in name order.
func (c *Cluster) Nodes() []*NATS { return c.nodes }

// Node returns the node with the given server name, or nil.
func (c *Cluster) Node(name string) *NATS {
	for _, n := range c.nodes {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// URLs returns the client URLs of all nodes, comma-separated, as
// nats.Connect accepts them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// connect connects to any running node.
func (c *Cluster) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(c.URLs(), nats.Timeout(2*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats cluster: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// StreamLeader returns the node that leads stream.
func (c *Cluster) StreamLeader(ctx context.Context, stream string) (*NATS, error) {
	nc, js, err := c.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	return c.streamLeader(ctx, js, stream)
}

func (c *Cluster) streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (*NATS, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %q: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %q info: %w", stream, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Errorf("stream %q has no leader", stream)
	}
	n := c.Node(info.Cluster.Leader)
	if n == nil {
		return nil, fmt.Errorf("stream %q is led by %q, which is not in this cluster", stream, info.Cluster.Leader)
	}
	return n, nil
}

// StepDownStream asks the leader of stream to step down
// ($JS.API.STREAM.LEADER.STEPDOWN.<stream>) and waits until another node
// leads it. It returns the new leader.
func (c *Cluster) StepDownStream(ctx context.Context, stream string) (*NATS, error) {
	nc, js, err := c.connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	old, err := c.streamLeader(ctx, js, stream)
	if err != nil {
		return nil, err
	}
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
	if err != nil {
		return nil, fmt.Errorf("step down leader of stream %q: %w", stream, err)
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("step down leader of stream %q: decode %q: %w", stream, msg.Data, err)
	}
	if !resp.Success {
		desc := "no reason given"
		if resp.Error != nil {
			desc = resp.Error.Description
		}
		return nil, fmt.Errorf("step down leader of stream %q: %s", stream, desc)
	}
	var leader *NATS
	timeout := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	err = Poll(timeout, func() (bool, error) {
		// While there is no leader, stream info requests go unanswered
		// until their context ends, so give each attempt its own deadline.
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		n, err := c.streamLeader(attempt, js, stream)
		if err != nil {
			return false, err
		}
		if n == old {
			return false, errors.New("old leader still leads")
		}
		leader = n
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for a new leader of stream %q: %w", stream, err)
	}
	return leader, nil
}

// logTails returns the last lines of every node's log, for test failures.
func (c *Cluster) logTails(lines int) string {
	var b strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", n.Name(), n.LogFile(), tailFile(n.LogFile(), lines))
	}
	return b.String()
}
