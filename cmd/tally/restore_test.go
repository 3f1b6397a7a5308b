package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// streamCounts returns how many events each partition stream holds.
func streamCounts(t *testing.T, url string, p int) []uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for n := range p {
		s, err := js.Stream(context.Background(), streams.StreamName(n))
		if err != nil {
			out = append(out, 0)
			continue
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, info.State.LastSeq)
	}
	return out
}

// TestEventsRestore dumps a ledger with traffic on every partition and
// restores the dump into new ledgers: through NATS and into an embedded
// server's directory. The restored streams dump to the same bytes, audit
// verify passes, an enforcer on the restored ledger answers a retried
// request with its original answer and keeps the balances; an interrupted
// restore resumes; a dump that is not whole partitions, one made with
// another P, a malformed line, or a target that holds other events are
// refused with the line and the reason, and nothing is appended.
func TestEventsRestore(t *testing.T) {
	l := startRptLedger(t)
	must := func(code int, out, errOut string) string {
		t.Helper()
		if code != exitOK {
			t.Fatalf("exit %d: %s%s", code, out, errOut)
		}
		return out
	}
	var keys []string
	for i := range 6 {
		root := fmt.Sprintf("tenant:r%d", i)
		must(l.tally("budget", "set", "--scope", root, "--name", "m", "--limit", "USD=10"))
		out := must(l.tally("reserve", "--scope", root+"/run:a", "--amount", "USD=4", "--key", fmt.Sprintf("r%d-a", i), "--json"))
		var res struct {
			ReservationID string `json:"reservation_id"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		must(l.tally("commit", "--root", root, "--id", res.ReservationID, "--actual", "USD=3"))
		if code, out, errOut := l.tally("reserve", "--scope", root+"/run:b", "--amount", "USD=8"); code != exitDenied {
			t.Fatalf("reserve over the limit: exit %d: %s%s", code, out, errOut)
		}
		keys = append(keys, fmt.Sprintf("r%d-a", i))
	}
	dump := must(l.tally("events", "dump"))
	dir := t.TempDir()
	dumpFile := filepath.Join(dir, "dump.jsonl")
	if err := os.WriteFile(dumpFile, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(dump, "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline

	// Through NATS, into a server without a ledger.
	srv := natstest.RunServer(t, natstest.WithPartitions(rptPartitions))
	url := srv.ClientURL()
	if code, _, errOut := tallyAt(t, url, "events", "restore", "--file", dumpFile); code != exitUsage || !strings.Contains(errOut, "give --partitions") {
		t.Fatalf("restore without a ledger or --partitions: exit %d: %s", code, errOut)
	}
	// Made with P = 3: routed differently with P = 2. Nothing is created.
	code, _, errOut := tallyAt(t, url, "events", "restore", "--file", dumpFile, "--partitions", "2")
	if code != exitFail || !strings.Contains(errOut, "another P") || !strings.Contains(errOut, "nothing was created") {
		t.Fatalf("restore with another P: exit %d: %s", code, errOut)
	}
	if code, _, errOut := tallyAt(t, url, "budget", "list", "--root", "tenant:r0", "--timeout", "1s"); code == exitOK {
		t.Fatalf("a ledger was created: %s", errOut)
	}
	// Not whole partitions: the first event is missing.
	partial := filepath.Join(dir, "partial.jsonl")
	if err := os.WriteFile(partial, []byte(strings.Join(lines[1:], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := tallyAt(t, url, "events", "restore", "--file", partial, "--partitions", "3"); code != exitFail || !strings.Contains(errOut, "line 1: ") || !strings.Contains(errOut, "does not chain") {
		t.Fatalf("restore of a partial dump: exit %d: %s", code, errOut)
	}
	// Interrupted: a beginning of the dump, then all of it.
	half := filepath.Join(dir, "half.jsonl")
	if err := os.WriteFile(half, []byte(strings.Join(lines[:len(lines)/2], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	must(tallyAt(t, url, "events", "restore", "--file", half, "--partitions", "3"))
	out := must(tallyAt(t, url, "events", "restore", "--file", dumpFile))
	if !strings.Contains(out, "already there") || !strings.Contains(out, "tally audit verify") {
		t.Errorf("restore output:\n%s", out)
	}
	if got := must(tallyAt(t, url, "events", "dump")); got != dump {
		t.Fatalf("the restored ledger dumps differently:\n%s\nwant\n%s", got, dump)
	}
	// Again: nothing to append, nothing appended.
	before := streamCounts(t, url, rptPartitions)
	must(tallyAt(t, url, "events", "restore", "--file", dumpFile))
	if after := streamCounts(t, url, rptPartitions); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a repeated restore appended: %v → %v", before, after)
	}
	must(tallyAt(t, url, "audit", "verify", "--no-projection"))

	// A malformed line, and a target holding other events: refused,
	// nothing appended.
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(lines[0]+`{"v":1,"id":`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := tallyAt(t, url, "events", "restore", "--file", bad); code != exitFail || !strings.Contains(errOut, "line 2: ") {
		t.Fatalf("restore of a malformed line: exit %d: %s", code, errOut)
	}
	other := startRptLedger(t)
	must(other.tally("budget", "set", "--scope", "tenant:r0", "--name", "other", "--limit", "USD=1"))
	before = streamCounts(t, other.url, rptPartitions)
	if code, _, errOut := tallyAt(t, other.url, "events", "restore", "--file", dumpFile); code != exitFail || !strings.Contains(errOut, "differs") {
		t.Fatalf("restore into a ledger with other events: exit %d: %s", code, errOut)
	}
	if after := streamCounts(t, other.url, rptPartitions); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused restore appended: %v → %v", before, after)
	}

	// A target that holds the dump's partition 0 but something else in
	// partition 2: refused before anything is appended to partition 1.
	mixed := natstest.RunServer(t, natstest.WithPartitions(rptPartitions))
	var p0 []string
	for _, line := range lines {
		var ev struct {
			Partition int `json:"partition"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Partition == 0 {
			p0 = append(p0, line)
		}
	}
	first := filepath.Join(dir, "p0.jsonl")
	if err := os.WriteFile(first, []byte(strings.Join(p0, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	must(tallyAt(t, mixed.ClientURL(), "events", "restore", "--file", first, "--partitions", "3"))
	mnc := natstest.Connect(t, mixed)
	if err := mnc.Publish(streams.EventSubject(2, "_", "foreign"), []byte(`{"not":"ours"}`)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if c := streamCounts(t, mixed.ClientURL(), rptPartitions); c[2] != 1 {
			return fmt.Errorf("partition 2 holds %d", c[2])
		}
		return nil
	})
	before = streamCounts(t, mixed.ClientURL(), rptPartitions)
	if code, _, errOut := tallyAt(t, mixed.ClientURL(), "events", "restore", "--file", dumpFile); code != exitFail ||
		!strings.Contains(errOut, "partition 2 already holds 1 events") || !strings.Contains(errOut, "nothing was appended") {
		t.Fatalf("restore into a ledger with a foreign event: exit %d: %s", code, errOut)
	}
	if after := streamCounts(t, mixed.ClientURL(), rptPartitions); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused restore appended: %v → %v", before, after)
	}

	// Into an embedded server's directory, then served by tally serve: a
	// retried request gets its original answer, and the balances hold.
	dataDir := filepath.Join(dir, "data")
	must(tallyCmd("events", "restore", "--file", dumpFile, "--partitions", "3", "--data-dir", dataDir))
	addr := freeAddr(t)
	startServe(t, []string{"--data-dir", dataDir, "--nats-listen", addr, "--partitions", "3", "--log-level", "warn"}, func(string) error {
		if code, out, errOut := tallyAt(t, "nats://"+addr, "budget", "list", "--root", "tenant:r0", "--timeout", "1s"); code != exitOK {
			return fmt.Errorf("exit %d: %s%s", code, out, errOut)
		}
		return nil
	})
	served := "nats://" + addr
	for i, key := range keys {
		root := fmt.Sprintf("tenant:r%d", i)
		_, orig, _ := l.tally("reserve", "--scope", root+"/run:a", "--amount", "USD=4", "--key", key, "--json")
		_, again, errOut := tallyAt(t, served, "reserve", "--scope", root+"/run:a", "--amount", "USD=4", "--key", key, "--json")
		if orig == "" || again != orig {
			t.Errorf("%s: retried reserve answered\n%s%s\nwant the original\n%s", root, again, errOut, orig)
		}
		want := must(l.tally("balance", "--scope", root, "--json"))
		if got := must(tallyAt(t, served, "balance", "--scope", root, "--json")); !bytes.Equal([]byte(got), []byte(want)) {
			t.Errorf("%s: balance after restore\n%s\nwant\n%s", root, got, want)
		}
	}
}
