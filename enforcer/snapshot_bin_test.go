package enforcer

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// snapshotV1 is the JSON encoding (version 1) of s's snapshot: what
// Snapshot wrote before the binary format, and what stored snapshots of
// earlier builds hold.
func snapshotV1(t testing.TB, s *State) []byte {
	t.Helper()
	b, err := encodeSnapshotJSON(s.canonical())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshotDiff diffs two snapshots of either format as indented JSON.
func snapshotDiff(want, got []byte) string {
	text := func(b []byte) string {
		j, err := SnapshotJSON(b)
		if err != nil {
			return fmt.Sprintf("%v\n%q", err, b)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, j, "", "  "); err != nil {
			return string(j)
		}
		return out.String()
	}
	return cmp.Diff(text(want), text(got))
}

// snapshotStates builds states covering what a snapshot holds: budgets of
// every kind (periods, time zones, shadow mode, floors, thresholds),
// instances with spend, reservations and adjustments and fired
// thresholds, open, committed, released and expired reservations with
// labels, options and holds on a since deleted budget, figures beyond the
// request bounds, and idempotency keys of every operation.
func snapshotStates(t testing.TB) map[string]*harness {
	t.Helper()
	out := map[string]*harness{"empty": newHarness(t)}

	h := newHarness(t)
	h.now = h.now.Add(123456789 * time.Nanosecond)
	h.set(acme, "monthly", `"limits":{"USD":"500","tokens":"1000000"},"period":"monthly","timezone":"Europe/Paris","alert_thresholds":["0.001","0.5","1"]`)
	h.set("tenant:acme/run:*", "per-run", `"limits":{"USD":"2.00"}`)
	h.set(acme, "watch", `"limits":{"USD":"1"},"mode":"shadow","priority_floors":{"normal":"0.25","bulk":"0.7"}`)
	h.set("tenant:acme/workflow:cr", "daily", `"limits":{"USD":"10"},"period":"daily","timezone":"America/New_York"`)
	h.set("tenant:other", "hourly", `"limits":{"req":"100"},"period":"hourly"`)
	h.set("tenant:acme/tmp:*", "doomed", `"limits":{"USD":"50"}`)
	// Open, with labels, a priority and a ttl; one degraded to an option.
	h.res("tenant:acme/run:r1", `{"USD":"1.5","tokens":"100"}`, `"labels":{"model":"opus","agent":"a-1"},"priority":"high","ttl_ms":90000`)
	if r := h.reserve(acme, `{"idempotency_key":"opt","scope":"tenant:acme/workflow:cr/run:r2","options":[{"label":"opus","amounts":{"USD":"80"}},{"label":"cached","amounts":{"USD":"0.5"}}]}`); r.Option != 1 {
		t.Fatalf("want the second option, got %s", jsonOf(r))
	}
	// Committed with overage, released, expired, extended.
	r := h.res("tenant:acme/run:r3", `{"USD":"1"}`, `"labels":{"model":"haiku"}`)
	h.advance(1500 * time.Millisecond)
	h.commit(acme, r.ReservationID, `{"USD":"1.7","tokens":"3"}`)
	r = h.res("tenant:acme/run:r4", `{"USD":"0.25"}`, `"priority":"bulk"`)
	h.release(acme, r.ReservationID)
	r = h.res("tenant:acme/workflow:cr", `{"USD":"0.1"}`, `"ttl_ms":1000`)
	h.advance(2 * time.Second)
	h.tick()
	r = h.res("tenant:acme/tmp:t1", `{"USD":"3"}`, `"ttl_ms":5000`)
	h.ok(events.OpExtend, acme, `{"idempotency_key":"ext","reservation_id":"`+r.ReservationID+`","ttl_ms":30000}`)
	tmp := h.res("tenant:acme/tmp:t2", `{"USD":"4"}`, "")
	h.commit(acme, tmp.ReservationID, `{"USD":"2"}`)
	// Charges, a denial, adjustments, a deleted and re-set budget.
	h.charge("tenant:acme/workflow:cr/run:r9", `{"USD":"0.75","tokens":"12"}`)
	h.charge("tenant:other/x:1", `{"req":"7"}`)
	if d := h.res("tenant:acme/run:r5", `{"USD":"3"}`, ""); d.Decision != events.DecisionDenied {
		t.Fatalf("want a denial, got %s", jsonOf(d))
	}
	h.ok(events.OpBudgetAdjust, acme, `{"idempotency_key":"adj1","scope":"tenant:acme","name":"monthly","delta":{"USD":"25.5"},"reason":"top-up"}`)
	h.ok(events.OpBudgetAdjust, "tenant:other", `{"idempotency_key":"adj2","scope":"tenant:other","name":"hourly","delta":{"req":"-10"},"reason":"cut"}`)
	h.ok(events.OpBudgetDelete, acme, `{"idempotency_key":"del","scope":"tenant:acme/tmp:*","name":"doomed"}`)
	h.set("tenant:acme/tmp:*", "doomed", `"limits":{"USD":"60"}`)
	h.advance(time.Hour + 7*time.Nanosecond)
	h.res("tenant:acme/tmp:t3", `{"USD":"0.000000000000000001"}`, `"labels":{"z":"","a":"ü"}`)
	out["rich"] = h

	// Figures beyond the request bounds (TestWideFiguresReplay).
	h = newHarness(t)
	root := "tenant:wide"
	h.set(root, "floor", `"limits":{"USD":"1.000000000000000001"},"priority_floors":{"low":"0.333333333333333333"}`)
	h.set(root, "shadow", `"mode":"shadow","limits":{"USD":"0.000000000000000003"},"priority_floors":{"low":"0.123456789012345678"}`)
	h.res(root, `{"USD":"0.5"}`, `"priority":"low"`)
	h.res(root, `{"USD":"0.4"}`, `"priority":"low"`)
	h.charge(root, `{"USD":"0.000000000000000001"}`)
	h.set(root, "floor", `"limits":{"USD":"10000000000000000000000000000000000000"}`)
	out["wide"] = h

	// Many reservations of one run, committed, so that the closed queue and
	// idempotency keys dominate, as in a large partition.
	h = newHarness(t)
	h.set(acme, "m", `"limits":{"USD":"1000000","tokens":"100000000"},"period":"monthly"`)
	h.set("tenant:acme/run:*", "r", `"limits":{"USD":"1000"}`)
	for i := range 40 {
		r := h.res(fmt.Sprintf("tenant:acme/run:r%d", i%3), `{"USD":"0.42","tokens":"12000"}`, `"labels":{"model":"m"}`)
		h.advance(time.Millisecond)
		if i%4 != 3 {
			h.commit(acme, r.ReservationID, `{"USD":"0.37","tokens":"10500"}`)
		}
	}
	out["many"] = h
	return out
}

// TestSnapshotBinaryRoundTrip checks that a restored state snapshots to the
// same bytes, that the JSON snapshot of earlier builds restores to the same
// state, and that the codec gives back the struct it was given, every
// figure exactly.
func TestSnapshotBinaryRoundTrip(t *testing.T) {
	exact := cmp.Comparer(func(a, b events.Amount) bool { return a.Cmp(b) == 0 && a.String() == b.String() })
	for name, h := range snapshotStates(t) {
		t.Run(name, func(t *testing.T) {
			snap := h.s.Snapshot()
			if !bytes.HasPrefix(snap, []byte(snapshotMagic)) {
				t.Fatalf("snapshot starts with %q", snap[:min(8, len(snap))])
			}
			// Snapshot writes retained reservations and keys from the
			// fifos' bytes: the canonical form's encoding, exactly.
			if want := appendSnapshot(nil, h.s.canonical()); !bytes.Equal(snap, want) {
				t.Fatalf("Snapshot differs from the canonical form's encoding:\n%s", snapshotDiff(want, snap))
			}
			r, err := Restore(h.s.cfg, snap)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Snapshot(); !bytes.Equal(got, snap) {
				t.Fatalf("restore changed the state:\n%s", snapshotDiff(snap, got))
			}
			v1 := snapshotV1(t, h.s)
			r1, err := Restore(h.s.cfg, v1)
			if err != nil {
				t.Fatalf("version 1 snapshot: %v", err)
			}
			if got := r1.Snapshot(); !bytes.Equal(got, snap) {
				t.Fatalf("the version 1 snapshot restores to another state:\n%s", snapshotDiff(snap, got))
			}
			if j, err := SnapshotJSON(snap); err != nil || !bytes.Equal(j, v1) {
				t.Fatalf("SnapshotJSON of the binary snapshot (%v):\n%s", err, cmp.Diff(string(v1), string(j)))
			}
			if j, err := SnapshotJSON(v1); err != nil || !bytes.Equal(j, v1) {
				t.Fatalf("SnapshotJSON of the JSON snapshot (%v):\n%s", err, cmp.Diff(string(v1), string(j)))
			}
			want := h.s.canonical()
			got, err := decodeSnapshotBinary(snap)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, exact, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("decoded snapshot (-want +got):\n%s", diff)
			}
			// The state is restored whole: it decides as the original does.
			if name != "empty" {
				checkSameBalances(t, h, r)
			}
		})
	}
}

// checkSameBalances compares the balances the live and a restored state give.
func checkSameBalances(t *testing.T, h *harness, r *State) {
	t.Helper()
	for _, scope := range []string{acme, "tenant:acme/run:r1", "tenant:acme/workflow:cr/run:r2", "tenant:acme/tmp:t1", "tenant:other/x:1", "tenant:wide"} {
		req := &events.BalanceRequest{Scope: scope}
		want := h.s.Decide(Command{Op: events.OpBalance, Root: events.Root(scope), Request: req}, h.now)
		got := r.Decide(Command{Op: events.OpBalance, Root: events.Root(scope), Request: req}, h.now)
		if diff := cmp.Diff(jsonOf(want.Result), jsonOf(got.Result)); diff != "" {
			t.Errorf("balance of %s (-live +restored):\n%s", scope, diff)
		}
	}
}

// TestSnapshotCodecKeepsAnyStruct checks the codec on what a state never
// snapshots but a decoder must carry: holds on unknown budgets, on scopes
// that are not prefixes, with units and amounts of their own, and extreme
// times and sequences.
func TestSnapshotCodecKeepsAnyStruct(t *testing.T) {
	sn := newHarness(t).s.canonical()
	for _, h := range snapshotStates(t) {
		if c := h.s.canonical(); len(c.Reservations) > len(sn.Reservations) {
			sn = c
		}
	}
	sn.LastSeq = 1<<64 - 1
	sn.LastAt = time.Unix(-1<<40, 999999999).UTC()
	sn.Partition = -7
	sn.Reservations[0].Holds = append(sn.Reservations[0].Holds,
		snapHold{Budget: "gone\x00x", Scope: "elsewhere", Period: "2026", Units: events.Amounts{"USD": amt("99"), "zz": amt("0")}},
		snapHold{Budget: sn.Instances[0].Budget, Scope: "", Period: "none", Units: events.Amounts{}})
	sn.Reservations[0].Option = -3
	sn.Instances[0].Budget = "unknown\x00budget"
	sn.Idempotency[0].Hash = "ABCDEF0123456789abcdef0123456789" // not lowercase: kept as text
	sn.Idempotency[1].Hash = ""
	b := appendSnapshot(nil, sn)
	got, err := decodeSnapshotBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	exact := cmp.Comparer(func(a, b events.Amount) bool { return a.Cmp(b) == 0 && a.String() == b.String() })
	if diff := cmp.Diff(sn, got, exact, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("(-encoded +decoded):\n%s", diff)
	}
	if again := appendSnapshot(nil, got); !bytes.Equal(again, b) {
		t.Fatal("re-encoding the decoded struct gives other bytes")
	}
}

func TestRestoreRejects(t *testing.T) {
	h := snapshotStates(t)["rich"]
	v2, v1 := h.s.Snapshot(), snapshotV1(t, h.s)
	v1as := func(v int) []byte {
		return bytes.Replace(v1, []byte(`{"v":1,`), fmt.Appendf(nil, `{"v":%d,`, v), 1)
	}
	binaryVersion := func(v uint64) []byte {
		b := binary.AppendUvarint([]byte(snapshotMagic), v)
		return append(b, v2[len(snapshotMagic)+1:]...)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"neither format", []byte("[1,2]"), "neither a binary snapshot nor a JSON one"},
		{"JSON of version 2", v1as(2), "JSON snapshot of version 2"},
		{"JSON of version 0", v1as(0), "JSON snapshot of version 0"},
		{"binary of version 1", binaryVersion(1), "binary snapshot of version 1"},
		{"binary of version 3", binaryVersion(3), "binary snapshot of version 3"},
		{"another magic", append([]byte("\x00TSNQ"), v2[5:]...), "not the binary snapshot prefix"},
		{"bytes left over", append(bytes.Clone(v2), 0), "1 bytes left over after the snapshot at offset " + fmt.Sprint(len(v2))},
		{"JSON with bytes left over", append(bytes.Clone(v1), '}'), "invalid character"},
		{"another partition", h.s.Snapshot(), "restored into partition 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.s.cfg
			if tt.name == "another partition" {
				cfg.Partition = 4
			}
			_, err := Restore(cfg, tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// restoreChecked restores b, which must not panic; when it restores, the
// state's snapshot must restore to the same snapshot.
func restoreChecked(t testing.TB, cfg Config, b []byte) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Restore panicked on %q: %v", b, r)
		}
	}()
	s, err := Restore(cfg, b)
	if err != nil {
		return err
	}
	snap := s.Snapshot()
	s2, err := Restore(cfg, snap)
	if err != nil {
		t.Fatalf("the snapshot of a restored state does not restore: %v", err)
	}
	if again := s2.Snapshot(); !bytes.Equal(again, snap) {
		t.Fatalf("the snapshot of a restored state restores to another:\n%s", snapshotDiff(snap, again))
	}
	return nil
}

func TestRestoreTruncated(t *testing.T) {
	for name, h := range snapshotStates(t) {
		snap := h.s.Snapshot()
		for i := range len(snap) {
			err := restoreChecked(t, h.s.cfg, snap[:i])
			if err == nil {
				t.Fatalf("%s: the first %d of %d bytes restore", name, i, len(snap))
			}
			if i > len(snapshotMagic) && !strings.Contains(err.Error(), "at offset") {
				t.Fatalf("%s: truncated at %d: the error names no offset: %v", name, i, err)
			}
		}
	}
}

func TestRestoreCorrupted(t *testing.T) {
	h := snapshotStates(t)["rich"]
	snap := h.s.Snapshot()
	restored, failed := 0, 0
	for i := range snap {
		for _, c := range []byte{0x00, 0xff, snap[i] ^ 0x01} {
			if c == snap[i] {
				continue
			}
			b := bytes.Clone(snap)
			b[i] = c
			if restoreChecked(t, h.s.cfg, b) == nil {
				restored++
			} else {
				failed++
			}
		}
	}
	t.Logf("%d corruptions of a %d-byte snapshot: %d restore, %d refused", restored+failed, len(snap), restored, failed)
}

func TestRestoreHugeCount(t *testing.T) {
	empty := New(Config{Partition: 3}).Snapshot()
	// The empty snapshot ends with the five counts, budgets to idempotency.
	head := empty[:len(empty)-5]
	for _, tt := range []struct {
		name  string
		count uint64
		rest  []byte
		want  string
	}{
		{"beyond the input", 4_000_000_000, make([]byte, 17), "budgets: count 4000000000 exceeds the 17 bytes left at offset " + fmt.Sprint(len(head))},
		{"beyond 64 bits", 0, bytes.Repeat([]byte{0xff}, 11), "budgets: uvarint overflows 64 bits"},
		{"as many as the bytes left, all garbage", 1 << 20, bytes.Repeat([]byte{0xff}, 1<<20), "budgets[0]: uvarint overflows 64 bits"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(head)
			if tt.count > 0 {
				b = binary.AppendUvarint(b, tt.count)
			}
			b = append(b, tt.rest...)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Restore(Config{Partition: 3}, b)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			// At most the room made ahead, a small multiple of the input.
			if n := after.TotalAlloc - before.TotalAlloc; n > roomPerByte*uint64(len(b))+1<<20 {
				t.Fatalf("refusing %d bytes allocated %d bytes", len(b), n)
			}
		})
	}
	// A count of reservations that the bytes left could hold, of items that
	// decode: what is allocated follows what is read, not the count.
	b := binary.AppendUvarint(bytes.Clone(empty[:len(empty)-3]), 1_000_000)
	b = append(b, bytes.Repeat([]byte{0}, 1000)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Restore(Config{Partition: 3}, b)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "reservations: count 1000000 exceeds the 1000 bytes left") {
		t.Fatalf("error %v", err)
	}
	b = binary.AppendUvarint(bytes.Clone(empty[:len(empty)-3]), 5000)
	b = append(b, bytes.Repeat([]byte{0}, 5000)...)
	runtime.ReadMemStats(&before)
	_, err = Restore(Config{Partition: 3}, b)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "reservations[357]") {
		t.Fatalf("error %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("refusing it allocated %d bytes", n)
	}
}

func TestRestoreErrorNamesTheField(t *testing.T) {
	h := snapshotStates(t)["rich"]
	sn := h.s.canonical()
	sn.Reservations[0].Amounts = events.Amounts{"USD": amt("123.456789")}
	sn.Reservations[0].Holds = nil
	b := appendSnapshot(nil, sn)
	i := bytes.Index(b, []byte("\x03USD\x0a123.456789"))
	if i < 0 {
		t.Fatalf("no amount to corrupt in %q", b)
	}
	b[i+6] = 'x'
	_, err := Restore(h.s.cfg, b)
	want := fmt.Sprintf(`enforcer: snapshot: reservations[0].amounts: USD: bad character 'x' in amount "1x3.456789" at offset %d`, i+4)
	if err == nil || err.Error() != want {
		t.Fatalf("error %v\nwant  %s", err, want)
	}
}

// TestLoadSnapshotOfEitherFormat stores a partition's snapshot in the
// object store as this build writes it and as earlier builds did (JSON,
// version 1): after an upgrade, both restore to the partition's state.
func TestLoadSnapshotOfEitherFormat(t *testing.T) {
	srv := natstest.RunServer(t, natstest.WithPartitions(1))
	_, js := natstest.Ledger(t, srv, 1)
	ctx := context.Background()
	h := newHarnessCfg(t, Config{Partition: 0})
	h.set(acme, "b", `"limits":{"USD":"10"},"period":"daily"`)
	r := h.res("tenant:acme/run:r1", `{"USD":"2"}`, `"labels":{"model":"m"}`)
	h.commit(acme, r.ReservationID, `{"USD":"1.5"}`)
	h.res("tenant:acme/run:r2", `{"USD":"3"}`, "")
	hash := ""
	for i, ev := range h.log {
		ev.ID, ev.Prev = fmt.Sprintf("E%025d", i+1), hash
		raw, err := events.Encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		hash = events.Hash(raw)
		if _, err := js.Publish(ctx, streams.EventSubject(0, ev.Root, string(ev.Type)), raw); err != nil {
			t.Fatal(err)
		}
	}
	want := h.s.Snapshot()
	stdlib := func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }
	for _, c := range []struct {
		name string
		data []byte
		gzip func(io.Writer) io.WriteCloser
	}{
		{"binary", want, newGzipWriter},
		{"JSON of version 1", snapshotV1(t, h.s), newGzipWriter},
		{"binary, compressed by the standard library as earlier builds did", want, stdlib},
	} {
		name, data := c.name, c.data
		saved := newGzipWriter
		newGzipWriter = c.gzip
		err := SaveSnapshot(ctx, js, 0, data, h.s.LastSeq(), hash)
		newGzipWriter = saved
		if err != nil {
			t.Fatal(err)
		}
		st, got, err := LoadSnapshot(ctx, js, 0, Config{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got != hash || !bytes.Equal(st.Snapshot(), want) {
			t.Fatalf("%s: the stored snapshot restores to another state:\n%s", name, snapshotDiff(want, st.Snapshot()))
		}
	}
}

// FuzzRestoreSnapshot feeds Restore snapshots of both formats, mutated:
// it must not panic, a state it restores must snapshot to bytes that
// restore to the same state, and a binary snapshot must restore (or not)
// the same through the fast path and the general one.
func FuzzRestoreSnapshot(f *testing.F) {
	states := snapshotStates(f)
	for _, name := range []string{"empty", "rich", "wide", "many"} {
		h := states[name]
		f.Add(h.s.Snapshot())
		if name != "many" {
			f.Add(snapshotV1(f, h.s))
		}
	}
	cfg := Config{Partition: 3}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = restoreChecked(t, cfg, b)
		if len(b) > 0 && b[0] == snapshotMagic[0] {
			sameRestore(t, cfg, b) // the fast path and the general one agree
		}
	})
}

// BenchmarkSnapshotCodec encodes and decodes the snapshot of a state of
// reserve+commit pairs in both formats.
func BenchmarkSnapshotCodec(b *testing.B) {
	h := newHarness(b)
	h.set(acme, "m", `"limits":{"USD":"100000000000","tokens":"100000000000000"},"period":"monthly"`)
	h.set("tenant:acme/workflow:w", "w", `"limits":{"USD":"100000000000","tokens":"100000000000000"},"period":"daily"`)
	h.set("tenant:acme/workflow:w/run:*", "r", `"limits":{"USD":"100000000000","tokens":"100000000000000"}`)
	for i := range 5000 {
		r := h.res(fmt.Sprintf("tenant:acme/workflow:w/run:r%d", i%1000), `{"USD":"0.42","tokens":"12000"}`, `"labels":{"model":"m"}`)
		h.advance(time.Millisecond)
		h.commit(acme, r.ReservationID, `{"USD":"0.37","tokens":"10500"}`)
	}
	sn := h.s.canonical()
	v1, v2 := snapshotV1(b, h.s), h.s.Snapshot()
	b.Logf("%d reserve+commit pairs: %d bytes of JSON, %d bytes binary", 5000, len(v1), len(v2))
	b.Run("encode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeSnapshotJSON(sn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			appendSnapshot(nil, sn)
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeSnapshot(v1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeSnapshot(v2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restore/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Restore(h.s.cfg, v2); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Snapshot writes the closed queue and the idempotency keys straight from
// the fifos; the bytes must be those of the canonical form's encoding,
// for request hashes of any spelling (a replayed event may carry a hash
// that is not 32 hex digits) and for keys of any bytes.
func TestSnapshotRetainedStraightFromTheFifos(t *testing.T) {
	h := newHarness(t)
	h.set(acme, "b", `"limits":{"USD":"10"}`)
	r := h.reserve(acme, `{"idempotency_key":"k1","scope":"tenant:acme/run:r1","amounts":{"USD":"1"}}`)
	h.commit(acme, r.ReservationID, `{"USD":"0.5"}`)
	at := h.now
	for i, hash := range []string{"", "short", strings.Repeat("A", 32), strings.Repeat("g", 32), strings.Repeat("ab", 16), "é" + strings.Repeat("0", 30)} {
		h.s.remember("tenant:x", events.OpCharge, fmt.Sprintf("key-%d\x00\xff", i), hash, h.s.LastSeq()+uint64(i)+1, at)
	}
	snap := h.s.Snapshot()
	if want := appendSnapshot(nil, h.s.canonical()); !bytes.Equal(snap, want) {
		t.Fatalf("Snapshot differs from the canonical form's encoding:\n%s", snapshotDiff(want, snap))
	}
	rs, err := Restore(h.s.cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Snapshot(); !bytes.Equal(got, snap) {
		t.Fatalf("restore changed the state:\n%s", snapshotDiff(snap, got))
	}
}
