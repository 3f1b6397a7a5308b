package enforcer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tallyledger/tally/events"
)

// restoreGeneral is Restore of a binary snapshot the general way: decoded
// into the snapshot struct, then built.
func restoreGeneral(cfg Config, b []byte) (*State, error) {
	sn, err := decodeSnapshotBinary(b)
	if err != nil {
		return nil, err
	}
	return restore(cfg, sn)
}

// sameRestore checks that the fast and the general restore of b agree:
// both refuse it with the same error, or both restore states with the
// same snapshot and the same closed fifo, record for record.
func sameRestore(t testing.TB, cfg Config, b []byte) (restored bool) {
	t.Helper()
	fast, ferr := restoreBinary(cfg, b)
	gen, gerr := restoreGeneral(cfg, b)
	if fmt.Sprint(ferr) != fmt.Sprint(gerr) {
		t.Fatalf("restoring %q:\nfast:    %v\ngeneral: %v", b, ferr, gerr)
	}
	if ferr != nil {
		return false
	}
	if fs, gs := fast.Snapshot(), gen.Snapshot(); !bytes.Equal(fs, gs) {
		t.Fatalf("restoring %q: the states differ:\n%s", b, snapshotDiff(gs, fs))
	}
	sameFifo(t, b, "closed", &fast.closed, &gen.closed)
	sameFifo(t, b, "idempotency", &fast.idem, &gen.idem)
	if fast.open.len() != gen.open.len() || len(fast.expiries) != len(gen.expiries) {
		t.Fatalf("restoring %q: %d open (%d expiries) fast, %d (%d) general", b, fast.open.len(), len(fast.expiries), gen.open.len(), len(gen.expiries))
	}
	return true
}

// sameFifo checks that two restores of b filled a fifo with the same
// records, in the same order.
func sameFifo(t testing.TB, b []byte, what string, fast, gen *fifo) {
	t.Helper()
	if fast.records() != gen.records() {
		t.Fatalf("restoring %q: %d %s records fast, %d general", b, fast.records(), what, gen.records())
	}
	for i := range uint64(fast.records()) {
		fr, gr := fast.at(fast.head+i), gen.at(gen.head+i)
		if !bytes.Equal(fast.key(fr), gen.key(gr)) || !bytes.Equal(fast.value(fr), gen.value(gr)) || fr.seq != gr.seq || fr.at != gr.at {
			t.Fatalf("restoring %q: %s record %d: fast %q %x seq %d at %v, general %q %x seq %d at %v", b, what, i,
				fast.key(fr), fast.value(fr), fr.seq, fr.at, gen.key(gr), gen.value(gr), gr.seq, gr.at)
		}
	}
}

// TestRestoreBinaryMatchesGeneral restores each test state's snapshot, its
// truncations and single-byte corruptions of it both ways: the fast path
// must restore what the general one restores and refuse what it refuses,
// with the same error. (FuzzRestoreSnapshot goes on from there.)
func TestRestoreBinaryMatchesGeneral(t *testing.T) {
	for name, h := range snapshotStates(t) {
		snap := h.s.Snapshot()
		if _, err := restoreBinaryFast(h.s.cfg, snap); err != nil {
			t.Fatalf("%s: the fast path does not restore the snapshot: %v", name, err)
		}
		if !sameRestore(t, h.s.cfg, snap) {
			t.Fatalf("%s: the snapshot does not restore", name)
		}
		// Every byte of the smaller snapshots; of the larger ones, those
		// of a stride (FuzzRestoreSnapshot tries any).
		stride := max(1, len(snap)/700)
		for i := 0; i < len(snap); i += stride {
			sameRestore(t, h.s.cfg, snap[:i])
		}
		restored, refused := 0, 0
		for i := 0; i < len(snap); i += stride {
			for _, c := range []byte{0x00, 0xff, snap[i] ^ 0x01, snap[i] + 1} {
				if c == snap[i] {
					continue
				}
				b := bytes.Clone(snap)
				b[i] = c
				if sameRestore(t, h.s.cfg, b) {
					restored++
				} else {
					refused++
				}
			}
		}
		t.Logf("%s: %d corruptions of a %d-byte snapshot: %d restore, %d refused", name, restored+refused, len(snap), restored, refused)
	}
}

// TestRestoreBinaryRefusals builds snapshots the state refuses although
// their encoding is sound: the fast path gives the general path's errors.
func TestRestoreBinaryRefusals(t *testing.T) {
	h := snapshotStates(t)["many"]
	sn := h.s.canonical()
	if len(sn.Reservations) < 3 || sn.Reservations[0].Status == "open" {
		t.Fatalf("want closed reservations first, got %d reservations", len(sn.Reservations))
	}
	cases := map[string]func(sn *snapshot){
		"a closed reservation twice": func(sn *snapshot) { sn.Reservations[1].ID = sn.Reservations[0].ID },
		"an unknown status":          func(sn *snapshot) { sn.Reservations[0].Status = "lost" },
		"a hold on a budget gone":    func(sn *snapshot) { sn.Reservations[0].Holds[0].Budget = "gone\x00x" },
		"a hold of its own units": func(sn *snapshot) {
			sn.Reservations[0].Holds[0].Units = events.Amounts{"USD": amt("1"), "zz": amt("0")}
		},
		"a hold on another scope":    func(sn *snapshot) { sn.Reservations[0].Holds[0].Scope = "tenant:elsewhere" },
		"closed at another time":     func(sn *snapshot) { sn.Closed[0].At = sn.Closed[0].At.Add(1) },
		"queued twice":               func(sn *snapshot) { sn.Closed = append(sn.Closed, sn.Closed[0]) },
		"missing from the queue":     func(sn *snapshot) { sn.Closed = sn.Closed[1:] },
		"another partition":          func(sn *snapshot) { sn.Partition++ },
		"an open reservation twice":  func(sn *snapshot) { sn.Reservations[len(sn.Reservations)-1].ID = sn.Reservations[0].ID },
		"a negative option, kept":    func(sn *snapshot) { sn.Reservations[0].Option = -3 },
		"no labels, an empty label":  func(sn *snapshot) { sn.Reservations[0].Labels, sn.Reservations[0].Label = nil, "" },
		"a scope not its holds'":     func(sn *snapshot) { sn.Reservations[0].Scope = "x" },
		"a request hash not hex":     func(sn *snapshot) { sn.Idempotency[0].Hash = "not hex" },
		"a request hash in capitals": func(sn *snapshot) { sn.Idempotency[0].Hash = "ABCDEF0123456789abcdef0123456789" },
		"no request hash":            func(sn *snapshot) { sn.Idempotency[1].Hash = "" },
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			sn := h.s.canonical()
			change(&sn)
			sameRestore(t, h.s.cfg, appendSnapshot(nil, sn))
		})
	}
	// A varint written longer than it need be reads as its value.
	snap := h.s.Snapshot()
	long := append(bytes.Clone(snap[:len(snapshotMagic)]), 0x82, 0x00)
	long = append(long, snap[len(snapshotMagic)+1:]...)
	if binary.AppendUvarint(nil, SnapshotVersion)[0] != 0x02 {
		t.Fatal("the version is not one byte 2")
	}
	sameRestore(t, h.s.cfg, long)
}
