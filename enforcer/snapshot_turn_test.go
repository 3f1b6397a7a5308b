package enforcer_test

import (
	"sync"
	"testing"
	"time"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/internal/natstest"
)

// Partitions that reach their snapshots together (a uniform load) encode
// and store them one at a time: never two at once, so that snapshots take
// at most one CPU from the decisions. Each snapshot here holds its turn
// for a while, so that overlapping ones would be seen.
func TestSnapshotsOneAtATime(t *testing.T) {
	var (
		mu        sync.Mutex
		holders   int
		most      int
		snapshots = map[int]int{}
	)
	restore := enforcer.SetSnapshotTurnHook(func(n int, taken bool) {
		mu.Lock()
		if taken {
			holders++
			most = max(most, holders)
			snapshots[n]++
		} else {
			holders--
		}
		mu.Unlock()
		if taken {
			time.Sleep(20 * time.Millisecond)
		}
	})
	srv := natstest.RunServer(t, natstest.WithPartitions(testPartitions))
	l := startLedger(t, srv, func(c *enforcer.ServiceConfig) {
		c.Own = []int{0, 1, 2, 3}
		c.SnapshotEvery = 10
		c.Core.MaxIdempotencyKeys, c.Core.MaxClosedReservations = 10, 10
	})
	roots := []string{rootOf(0), rootOf(1), rootOf(2), rootOf(3)}
	setBudgets(t, l.nc, roots)
	randomLoad(t, l.nc, roots, 400, 11)
	l.stop()
	restore()
	mu.Lock()
	defer mu.Unlock()
	if len(snapshots) < 2 {
		t.Fatalf("snapshots by partition %v: want at least two partitions snapshotting", snapshots)
	}
	if most != 1 {
		t.Fatalf("%d snapshots were encoded or stored at once (by partition: %v), want one at a time", most, snapshots)
	}
	t.Logf("snapshots by partition: %v", snapshots)
}
