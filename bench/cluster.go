package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tallyledger/tally/streams"
)

// Shape and pacing of the in-process cluster of TargetCluster3.
const (
	clusterSize = 3
	clusterName = "tally-bench"
	loopback    = "127.0.0.1"
	// clusterReadyTimeout bounds the wait for a JetStream meta leader and
	// current followers.
	clusterReadyTimeout = 30 * time.Second
	// serverReadyTimeout bounds the wait for one node to take connections.
	serverReadyTimeout = 10 * time.Second
	pollInterval       = 25 * time.Millisecond
)

// startCluster starts a 3-node JetStream cluster on loopback with tally's
// request mapping for p partitions on every node (the mapping is applied by
// the server a client is connected to), stores under dir/n1…n3, and waits
// for a meta leader and current followers. It returns the running servers;
// the caller shuts them down (shutdownAll) even on error.
func startCluster(ctx context.Context, dir string, p int, syncAlways bool) ([]*server.Server, error) {
	ports, err := freePorts(2 * clusterSize)
	if err != nil {
		return nil, err
	}
	routes := make([]*url.URL, 0, clusterSize)
	for i := range clusterSize {
		routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort(loopback, strconv.Itoa(ports[2*i+1]))})
	}
	var servers []*server.Server
	for i := range clusterSize {
		name := "n" + strconv.Itoa(i+1)
		opts := &server.Options{}
		if err := opts.ProcessConfigString(streams.Mapping(p)); err != nil {
			return servers, fmt.Errorf("cluster node %s: request mapping: %w", name, err)
		}
		opts.ServerName = name
		opts.Host = loopback
		opts.Port = ports[2*i]
		opts.JetStream = true
		opts.StoreDir = filepath.Join(dir, name)
		opts.SyncAlways = syncAlways
		opts.MaxPayload = streams.MaxPayload
		opts.NoSigs = true
		opts.NoLog = true
		opts.Cluster = server.ClusterOpts{Name: clusterName, Host: loopback, Port: ports[2*i+1]}
		opts.Routes = routes
		s, err := server.NewServer(opts)
		if err != nil {
			return servers, fmt.Errorf("cluster node %s: %w", name, err)
		}
		s.Start()
		servers = append(servers, s)
		if !s.ReadyForConnections(serverReadyTimeout) {
			return servers, fmt.Errorf("cluster node %s: not ready after %s", name, serverReadyTimeout)
		}
	}
	err = poll(ctx, clusterReadyTimeout, func() error {
		leader := false
		for _, s := range servers {
			leader = leader || s.JetStreamIsLeader()
		}
		if !leader {
			return errors.New("no JetStream meta leader")
		}
		for _, s := range servers {
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s is not current with the meta leader", s.Name())
			}
		}
		return nil
	})
	if err != nil {
		return servers, fmt.Errorf("cluster: %w", err)
	}
	return servers, nil
}

// shutdownAll stops servers, each after the previous one is down.
func shutdownAll(servers []*server.Server) {
	for _, s := range servers {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// freePorts returns n distinct free loopback ports for servers whose ports
// must be known before they start (cluster routes): it listens on them all
// at once, then releases them for the servers to take.
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

// poll calls f every pollInterval until it returns nil; it fails with f's
// last error when total elapses, or with ctx's error when ctx ends.
func poll(ctx context.Context, total time.Duration, f func() error) error {
	deadline := time.Now().Add(total)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", total, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}
