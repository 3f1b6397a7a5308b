package enforcer_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
)

func TestServiceReserveCommit(t *testing.T) {
	l := startLedger(t, natstest.RunServer(t, natstest.WithPartitions(testPartitions)))
	root := "tenant:acme"
	mustOK(t, call(t, l.nc, root, "budget-set", `{"idempotency_key":"b1","scope":"tenant:acme","name":"monthly","limits":{"USD":"500"},"period":"monthly"}`), nil)
	mustOK(t, call(t, l.nc, root, "budget-set", `{"idempotency_key":"b2","scope":"tenant:acme/workflow:code-review/run:*","name":"per-run","limits":{"USD":"2.00"}}`), nil)
	var res events.ReserveResult
	mustOK(t, call(t, l.nc, root, "reserve", `{"idempotency_key":"k1","scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"0.40","tokens":"12000"}}`), &res)
	if res.Decision != "granted" || res.ReservationID == "" || res.Event == nil {
		t.Fatalf("reserve: %+v", res)
	}
	var again events.ReserveResult
	mustOK(t, call(t, l.nc, root, "reserve", `{"scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"tokens":"12000","USD":"0.4"},"idempotency_key":"k1"}`), &again)
	if again.ReservationID != res.ReservationID || *again.Event != *res.Event {
		t.Fatalf("retry got %+v, want %+v", again, res)
	}
	mustCode(t, call(t, l.nc, root, "reserve", `{"idempotency_key":"k1","scope":"tenant:acme/workflow:code-review/run:r-42","amounts":{"USD":"0.41"}}`), events.CodeIdempotencyConflict)
	var cr events.CommitResult
	mustOK(t, call(t, l.nc, root, "commit", fmt.Sprintf(`{"idempotency_key":"c1","reservation_id":%q,"actual":{"USD":"0.37"}}`, res.ReservationID)), &cr)
	if cr.Released["USD"].String() != "0.03" {
		t.Fatalf("commit: %+v", cr)
	}
	var bal events.BalanceResult
	mustOK(t, call(t, l.nc, root, "balance", `{"scope":"tenant:acme/workflow:code-review/run:r-42"}`), &bal)
	u, _ := bal.Instances[0].Units.Get("USD")
	if u.Spent.String() != "0.37" || u.Reserved.String() != "0" {
		t.Fatalf("balance: %+v", bal)
	}
	mustCode(t, call(t, l.nc, root, "balance", `{"scope":"tenant:other"}`), events.CodeForbidden)
}

// 64 concurrent clients reserving 1.00 USD against a 100.00 USD budget get
// exactly 100 grants.
func TestServiceConcurrentReservesExact(t *testing.T) {
	for _, mode := range []string{"enforce", "shadow"} {
		t.Run(mode, func(t *testing.T) {
			l := startLedger(t, natstest.RunServer(t, natstest.WithPartitions(testPartitions)))
			root := "tenant:pool"
			mustOK(t, call(t, l.nc, root, "budget-set", fmt.Sprintf(`{"idempotency_key":"b1","scope":"tenant:pool","name":"pool","limits":{"USD":"100.00"},"mode":%q}`, mode)), nil)
			const clients, each = 64, 4
			var mu sync.Mutex
			granted, denied := 0, 0
			overage := events.Zero
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					nc := natstest.Connect(t, l.srv)
					for i := range each {
						var r events.ReserveResult
						mustOK(t, call(t, nc, root, "reserve", fmt.Sprintf(`{"idempotency_key":"c%d-%d","scope":"tenant:pool/agent:a%d","amounts":{"USD":"1.00"}}`, c, i, c)), &r)
						mu.Lock()
						if r.Decision == "granted" {
							granted++
						} else {
							denied++
						}
						for _, sd := range r.ShadowDenials {
							overage = events.Max(overage, sd.Overage)
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			switch mode {
			case "enforce":
				if granted != 100 || denied != clients*each-100 {
					t.Fatalf("granted %d denied %d, want 100 and %d", granted, denied, clients*each-100)
				}
			case "shadow":
				// The last of 256 reservations would have needed 256 of 100.
				if granted != clients*each || overage.String() != "156" {
					t.Fatalf("granted %d peak shadow overage %s, want %d and 156", granted, overage, clients*each)
				}
			}
		})
	}
}
