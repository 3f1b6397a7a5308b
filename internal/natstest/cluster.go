package natstest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tallyledger/tally/streams"
)

// Cluster shape and pacing.
const (
	// ClusterSize is the number of nodes RunCluster starts.
	ClusterSize = 3
	// clusterName is the cluster's name, shared by every node.
	clusterName = "tally-test"
	// readyTimeout bounds the wait for one node to accept connections.
	readyTimeout = 10 * time.Second
	// jetStreamTimeout bounds the wait for a meta leader and current
	// followers; elections take a few seconds, more under -race.
	jetStreamTimeout = 30 * time.Second
	// pollInterval paces CheckFor in cluster waits.
	pollInterval = 25 * time.Millisecond
	// startAttempts bounds RunCluster's retries on a port taken meanwhile.
	startAttempts = 3
	// loopback is where every test node listens.
	loopback = "127.0.0.1"
)

// Cluster is a 3-node in-process JetStream cluster on loopback. Nodes are
// named n1…n3 (index 0…2) and keep their store directory and their client
// and route ports across Shutdown and Restart, so a client given URLs()
// reconnects to a restarted node. URLs, Server, Shutdown, StreamLeader and
// MetaLeader may be called from any goroutine; Restart and
// WaitJetStreamReady fail the test, so only from the test's goroutine.
type Cluster struct {
	t    testing.TB
	opts options

	mu    sync.Mutex
	nodes [ClusterSize]node
}

// node is one member's fixed identity and its current server, nil while
// it is down.
type node struct {
	name        string
	storeDir    string
	clientPort  int
	clusterPort int
	srv         *server.Server
}

// RunCluster starts a 3-node JetStream cluster with the request mapping on
// every node (the mapping is applied by the server a client is connected
// to), waits for a JetStream meta leader, and shuts the nodes down when the
// test ends.
func RunCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: newOptions(opts)}
	t.Cleanup(c.shutdownAll)
	// Free ports are found by listening and releasing them; another process
	// may take one in between. Then start over on fresh ports.
	var err error
	for range startAttempts {
		if err = c.startAll(t); err == nil {
			c.WaitJetStreamReady(t)
			return c
		}
		c.shutdownAll()
	}
	t.Fatalf("natstest: cluster did not start in %d attempts: %v", startAttempts, err)
	return nil
}

// startAll gives every node a fresh identity (ports, store) and starts it.
func (c *Cluster) startAll(t testing.TB) error {
	ports := FreePorts(t, 2*ClusterSize)
	base := t.TempDir()
	c.mu.Lock()
	for i := range c.nodes {
		c.nodes[i] = node{
			name:        "n" + strconv.Itoa(i+1),
			storeDir:    filepath.Join(base, "n"+strconv.Itoa(i+1)),
			clientPort:  ports[2*i],
			clusterPort: ports[2*i+1],
		}
	}
	c.mu.Unlock()
	for i := range c.nodes {
		if err := c.start(i); err != nil {
			return err
		}
	}
	return nil
}

// URLs is the comma-separated list of the nodes' client URLs, for
// nats.Connect: a client given it survives the loss of any one node.
func (c *Cluster) URLs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, 0, ClusterSize)
	for _, n := range c.nodes {
		urls = append(urls, "nats://"+net.JoinHostPort(loopback, strconv.Itoa(n.clientPort)))
	}
	return strings.Join(urls, ",")
}

// Server returns node i's running server, or nil while it is down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Shutdown stops node i gracefully (it hands its leaderships over) and
// waits until it is down. Stopping a node that is down does nothing.
func (c *Cluster) Shutdown(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart stops node i if it is running and starts it again on the same
// store directory and ports. It returns once the node accepts connections;
// call WaitJetStreamReady to wait until it has caught up.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Shutdown(i)
	if err := c.start(i); err != nil {
		c.t.Fatalf("natstest: restart: %v", err)
	}
}

// StreamLeader is the index of the node leading stream (in the global
// account), or -1 if no running node leads it.
func (c *Cluster) StreamLeader(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n.srv != nil && n.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// MetaLeader is the index of the JetStream meta leader, or -1 if no running
// node leads.
func (c *Cluster) MetaLeader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.nodes {
		if n.srv != nil && n.srv.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// WaitJetStreamReady waits until a running node is the JetStream meta leader
// and every running node is current with it.
func (c *Cluster) WaitJetStreamReady(t testing.TB) {
	t.Helper()
	CheckFor(t, jetStreamTimeout, pollInterval, func() error {
		if c.MetaLeader() < 0 {
			return errors.New("no JetStream meta leader")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range c.nodes {
			if n.srv != nil && !n.srv.JetStreamIsCurrent() {
				return fmt.Errorf("%s is not current with the meta leader", n.name)
			}
		}
		return nil
	})
}

// start starts node i from its fixed identity.
func (c *Cluster) start(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	routes := make([]*url.URL, 0, ClusterSize)
	for _, peer := range c.nodes {
		routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort(loopback, strconv.Itoa(peer.clusterPort))})
	}
	c.mu.Unlock()

	opts := &server.Options{}
	if err := opts.ProcessConfigString(streams.Mapping(c.opts.partitions)); err != nil {
		return fmt.Errorf("node %s: request mapping: %w", n.name, err)
	}
	opts.ServerName = n.name
	opts.Host = loopback
	opts.Port = n.clientPort
	opts.JetStream = true
	opts.StoreDir = n.storeDir
	opts.SyncAlways = c.opts.syncAlways
	opts.MaxPayload = streams.MaxPayload
	opts.NoSigs = true
	opts.NoLog = true
	opts.Cluster = server.ClusterOpts{Name: clusterName, Host: loopback, Port: n.clusterPort}
	opts.Routes = routes

	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("node %s: not ready after %s", n.name, readyTimeout)
	}
	c.mu.Lock()
	c.nodes[i].srv = s
	c.mu.Unlock()
	return nil
}

func (c *Cluster) shutdownAll() {
	for i := range c.nodes {
		c.Shutdown(i)
	}
}

// FreePorts returns n distinct free loopback ports, for servers whose ports
// must be known before they start (cluster routes). It listens on them all
// at once, then releases them for the servers to take.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := freePorts(n)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return ports
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
