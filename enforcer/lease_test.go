package enforcer

import (
	"fmt"
	"testing"
)

// Rendezvous spreads partitions evenly enough over members.
func TestRendezvousSpread(t *testing.T) {
	for _, members := range [][]string{{"e1", "e2"}, {"a", "b", "c"}, {"tally-1", "tally-2", "tally-3", "tally-4"}} {
		count := map[string]int{}
		const p = 64
		for n := 0; n < p; n++ {
			count[rendezvous(members, n)]++
		}
		for _, m := range members {
			share := float64(count[m]) / p
			if want := 1 / float64(len(members)); share < want/2 || share > want*1.5 {
				t.Errorf("members %v: %s gets %d of %d partitions", members, m, count[m], p)
			}
		}
		t.Log(fmt.Sprint(members, count))
	}
}
