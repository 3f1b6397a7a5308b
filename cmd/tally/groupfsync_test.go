package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyledger/tally/client"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// tally serve with --sync always fsyncs its store itself, once for every
// event acknowledged meanwhile (group fsync): decisions are answered after
// syncs (tally_fsync_seconds counts them), the barrier is served to the
// other processes on the server (a second enforcer joining over NATS uses
// it), and --group-fsync off gives the server's per-message fsync back.
func TestServeGroupFsync(t *testing.T) {
	if !streams.GroupFsyncSupported {
		t.Skip("group fsync needs syncfs(2), which only Linux has")
	}
	natsAddr, httpAddr := freeAddr(t), freeAddr(t)
	url := "nats://" + natsAddr
	_, log := startServe(t, []string{"--data-dir", t.TempDir(), "--nats-listen", natsAddr, "--http-listen", httpAddr,
		"--partitions", "8", "--owner", "serve-a", "--log-level", "info"}, func(log string) error {
		if !strings.Contains(log, "group_fsync=true") {
			return errors.New("not serving with group fsync yet")
		}
		return nil
	})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc, client.WithTimeout(2*time.Second))
	syncs := func() float64 {
		v, ok := scrape(t, httpAddr, "tally_fsync_seconds_count")
		if !ok {
			t.Fatalf("no tally_fsync_seconds on /metrics")
		}
		return v
	}
	natstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := c.Budgets(context.Background(), "tenant:g0")
		return err
	})
	reserve := func(root string) {
		t.Helper()
		r, err := c.Reserve(context.Background(), events.ReserveRequest{Scope: root, Amounts: events.Amounts{"USD": events.One}})
		if err != nil || r.Decision != events.DecisionGranted {
			t.Fatalf("reserve on %s: %+v %v", root, r, err)
		}
	}
	before := syncs()
	for i := range 8 {
		reserve(fmt.Sprintf("tenant:g%d", i))
	}
	if after := syncs(); after <= before {
		t.Fatalf("8 grants answered with %v → %v syncs", before, after)
	}

	// The barrier on NATS: answered after a sync that began after the request.
	before = syncs()
	m, err := nc.Request(streams.SyncSubject, nil, 5*time.Second)
	if err != nil || string(m.Data) != "{}" {
		t.Fatalf("barrier request: %v %q", err, m.Data)
	}
	if after := syncs(); after <= before {
		t.Fatalf("barrier answered without a sync: %v → %v", before, after)
	}

	// A second enforcer joining over NATS syncs through this process.
	ectx, stopEnforcer := context.WithCancel(context.Background())
	elog := &natstest.Buffer{}
	done := make(chan int, 1)
	go func() {
		// Named: the partitions are spread over the members' names
		// (rendezvous hashing), and this pair splits the 8 between them.
		done <- run(ectx, []string{"enforcer", "--nats-url", url, "--owner", "joiner-b", "--http-listen", "", "--log-level", "info"},
			strings.NewReader(""), &bytes.Buffer{}, elog)
	}()
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(elog.String(), "took partition") {
			return errors.New("the second enforcer took no partition yet")
		}
		return nil
	})
	if !strings.Contains(elog.String(), "group fsync: the servers' tally serve syncs their store") {
		t.Errorf("the joining enforcer does not sync through tally serve:\n%s", elog)
	}
	natstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for i := range 8 {
			if _, err := c.Reserve(context.Background(), events.ReserveRequest{Scope: fmt.Sprintf("tenant:g%d", i), Amounts: events.Amounts{"USD": events.One}}); err != nil {
				return err
			}
		}
		return nil
	})
	stopEnforcer()
	if code := <-done; code != exitOK {
		t.Errorf("the second enforcer exited %d:\n%s", code, elog)
	}
	if t.Failed() {
		t.Logf("serve log:\n%s", log)
	}
}

// --group-fsync off: the server fsyncs each write, tally does not sync and
// serves no barrier.
func TestServeGroupFsyncOff(t *testing.T) {
	natsAddr, httpAddr := freeAddr(t), freeAddr(t)
	startServe(t, []string{"--data-dir", t.TempDir(), "--nats-listen", natsAddr, "--http-listen", httpAddr,
		"--partitions", "2", "--log-level", "info", "--group-fsync", "off"}, func(log string) error {
		if !strings.Contains(log, "group_fsync=false") {
			return errors.New("not serving yet")
		}
		return nil
	})
	if _, ok := scrape(t, httpAddr, "tally_fsync_seconds_count"); ok {
		t.Errorf("tally_fsync_seconds without group fsync")
	}
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Request(streams.SyncSubject, nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("barrier request without group fsync: %v, want no responders", err)
	}
	code, _, errOut := tallyCmd("serve", "--group-fsync", "sometimes", "--data-dir", t.TempDir())
	if code != exitUsage || !strings.Contains(errOut, `--group-fsync "sometimes"`) {
		t.Errorf("--group-fsync sometimes: exit %d: %s", code, errOut)
	}
}

// events restore into servers a tally serve syncs in groups asks its
// barrier before it says it is done; a barrier that fails is a failure.
func TestRestoreSyncsThroughTheBarrier(t *testing.T) {
	l := startRptLedger(t)
	if code, out, errOut := l.tally("budget", "set", "--scope", "tenant:r0", "--name", "m", "--limit", "USD=10"); code != exitOK {
		t.Fatalf("budget set: exit %d: %s%s", code, out, errOut)
	}
	code, dump, errOut := l.tally("events", "dump")
	if code != exitOK {
		t.Fatalf("dump: exit %d: %s", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "dump.jsonl")
	if err := os.WriteFile(file, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, fail := range []bool{false, true} {
		srv := natstest.RunServer(t, natstest.WithPartitions(rptPartitions))
		var syncs atomic.Int32
		b := streams.NewBarrier(func(context.Context) error {
			syncs.Add(1)
			if fail {
				return errors.New("disk gone")
			}
			return nil
		})
		if _, err := streams.ServeBarrier(natstest.Connect(t, srv), b); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := tallyAt(t, srv.ClientURL(), "events", "restore", "--file", file, "--partitions", "3")
		switch {
		case syncs.Load() == 0:
			t.Errorf("restore (failing barrier %v) did not ask the barrier: exit %d: %s%s", fail, code, out, errOut)
		case !fail && code != exitOK:
			t.Errorf("restore: exit %d: %s%s", code, out, errOut)
		case fail && (code != exitFail || !strings.Contains(errOut, "did not sync them to disk") || !strings.Contains(errOut, "disk gone")):
			t.Errorf("restore with a failing barrier: exit %d: %s%s", code, out, errOut)
		}
	}
}
