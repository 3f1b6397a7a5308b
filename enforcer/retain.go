package enforcer

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tallyledger/tally/events"
)

// The encodings of what the state retains in its fifos (ring.go): an
// idempotency key and its request hash, and a closed reservation. They
// live only in memory; snapshots keep their own format (snapshot.go).

// idemKey appends the fifo key of an idempotency key, scoped to (root,
// operation), to b.
func idemKey(b []byte, root string, op events.Op, key string) []byte {
	b = appendString(b, root)
	b = appendString(b, string(op))
	return append(b, key...)
}

func parseIdemKey(k []byte) (root string, op events.Op, key string) {
	d := decoder{b: k}
	root = d.string()
	op = events.Op(d.string())
	return root, op, string(d.b)
}

// Request hashes are 32 lowercase hex digits; they are kept as the 16
// bytes they spell, behind a tag byte. Anything else is kept as it is.
const (
	hashRaw = 0
	hashHex = 1
)

func appendHash(b []byte, hash string) []byte {
	if len(hash) == 32 {
		var raw [16]byte
		bad := byte(0)
		for i := range raw {
			hi, lo := hexVal[hash[2*i]], hexVal[hash[2*i+1]]
			bad |= hi | lo
			raw[i] = hi<<4 | lo&0xf
		}
		if bad&0x10 == 0 {
			return append(append(b, hashHex), raw[:]...)
		}
	}
	return append(append(b, hashRaw), hash...)
}

// hexVal maps a lowercase hex digit to its value and anything else to 0x10.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0x10
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// hashEqual reports whether an encoded hash is hash.
func hashEqual(v []byte, hash string) bool {
	if v[0] == hashRaw {
		return string(v[1:]) == hash
	}
	var buf [32]byte
	return len(hash) == 32 && len(v) == 17 && string(hex.AppendEncode(buf[:0], v[1:])) == hash
}

func decodeHash(v []byte) string {
	if v[0] == hashRaw {
		return string(v[1:])
	}
	return hex.EncodeToString(v[1:])
}

// A closed reservation's encoding: its fields in a fixed order; strings,
// counts and figures with uvarint lengths. Its id is the fifo key and its
// closing time the record's. A hold names its budget by id, so the holds on
// a budget deleted since are dropped when the reservation is read
// (deleteBudget), and its scope as a prefix length of the reservation's.

var statusCodes = []events.ReservationStatus{events.StatusOpen, events.StatusCommitted, events.StatusReleased, events.StatusExpired}

func appendClosed(b []byte, r *reservation) []byte {
	b = binary.AppendVarint(b, r.expiresAt.Unix())
	b = binary.AppendUvarint(b, uint64(r.expiresAt.Nanosecond()))
	st := slices.Index(statusCodes, r.status)
	if st < 0 {
		panic(fmt.Sprintf("enforcer: reservation %s has status %q", r.id, r.status))
	}
	b = append(b, byte(st))
	b = appendString(b, r.root)
	b = appendString(b, r.scope)
	b = appendString(b, string(r.priority))
	b = appendString(b, r.label)
	b = binary.AppendVarint(b, int64(r.option))
	b = binary.AppendUvarint(b, uint64(len(r.units))+1) // 0 was a reservation without amounts
	for i, u := range r.units {
		b = appendString(b, u)
		b = appendAmount(b, r.amts[i])
	}
	if r.labelsFlat != "" {
		b = append(b, r.labelsFlat...)
	} else {
		b = appendLabels(b, r.labels)
	}
	b = binary.AppendUvarint(b, uint64(len(r.holds)))
	for _, h := range r.holds {
		b = binary.AppendUvarint(b, h.budget().id)
		b = appendHoldScope(b, r.scope, h.scope())
		b = appendString(b, h.period())
		b = binary.AppendUvarint(b, uint64(len(h.units)))
		if sameSlice(h.units, r.units) { // the usual hold: every unit
			for i := range h.units {
				b = binary.AppendUvarint(b, uint64(i))
			}
			continue
		}
		for _, u := range h.units {
			if i, ok := slices.BinarySearch(r.units, u); ok {
				b = binary.AppendUvarint(b, uint64(i))
			} else {
				b = appendString(binary.AppendUvarint(b, uint64(len(r.units))), u)
			}
		}
	}
	return b
}

// appendLabels appends labels: 0 for nil, else their count + 1 and each
// key and value, by key.
func appendLabels(b []byte, labels events.Labels) []byte {
	if labels == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(labels))+1)
	for _, k := range sortedKeysOf(labels) {
		b = appendString(b, k)
		b = appendString(b, labels[k])
	}
	return b
}

// labels reads what appendLabels appended.
func (d *decoder) labels() events.Labels {
	n := d.uvarint()
	if n == 0 {
		return nil
	}
	labels := make(events.Labels, n-1)
	for range n - 1 {
		k := d.string()
		labels[k] = d.string()
	}
	return labels
}

// sameSlice reports whether a and b are the same slice of the same memory.
func sameSlice(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// readClosed decodes a closed reservation.
func (s *State) readClosed(rec *fifoRec) *reservation {
	d := decoder{b: s.closed.value(rec)}
	r := &reservation{id: string(s.closed.key(rec)), closedAt: rec.at.time(), heapIdx: -1}
	sec := d.varint()
	r.expiresAt = time.Unix(sec, int64(d.uvarint())).UTC()
	r.status = statusCodes[d.byte()]
	r.root = d.string()
	r.scope = d.string()
	r.priority = events.Priority(d.string())
	r.label = d.string()
	r.option = int(d.varint())
	if n := d.uvarint(); n > 1 {
		r.units, r.amts = make([]string, n-1), make([]events.Amount, n-1)
		for i := range r.units {
			r.units[i] = d.string()
			r.amts[i] = d.amount()
		}
	}
	r.labels = d.labels()
	holds := d.uvarint()
	for range holds {
		b := s.byID[d.uvarint()]
		var units []string
		var scope string
		if n := d.uvarint(); n > 0 {
			scope = r.scope[:n-1]
		} else {
			scope = d.string()
		}
		period := d.string()
		n := int(d.uvarint())
		all := n == len(r.units)
		for j := range n {
			i := int(d.uvarint())
			if i != j {
				all = false
			}
			if i == len(r.units) {
				units = append(units, d.string())
			} else {
				units = append(units, r.units[i])
			}
		}
		if all {
			units = r.units
		}
		if b == nil {
			continue // its budget was deleted
		}
		r.holds = append(r.holds, holdOn(b, scope, period, b.instances[instRef{scope, period}], units))
	}
	if len(d.b) != 0 {
		panic(fmt.Sprintf("enforcer: closed reservation %s: %d bytes left after decoding", r.id, len(d.b)))
	}
	return r
}

// appendHoldScope appends the scope of a hold of a reservation on scope,
// as both the retained and the snapshot encoding write it: one more than
// its length when it is a prefix of the reservation's scope (the usual
// case: a hold on an ancestor), else 0 and the scope. A snapshot copies it
// from the retained encoding as it stands.
func appendHoldScope(b []byte, scope, holdScope string) []byte {
	if strings.HasPrefix(scope, holdScope) {
		return binary.AppendUvarint(b, uint64(len(holdScope))+1)
	}
	return appendString(append(b, 0), holdScope)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendAmount appends a's canonical form with its length.
func appendAmount(b []byte, a events.Amount) []byte {
	start := len(b)
	b = a.Append(append(b, 0))
	if n := len(b) - start - 1; n < 0x80 {
		b[start] = byte(n) // a one-byte uvarint
		return b
	}
	return appendString(b[:start], string(b[start+1:]))
}

// decoder reads what the append functions above wrote; the bytes are the
// state's own, so a malformed encoding is a bug and panics.
type decoder struct{ b []byte }

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		panic("enforcer: malformed retained encoding")
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		panic("enforcer: malformed retained encoding")
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// since returns the bytes read from start (an earlier d.b) up to now: a
// field's encoding as it stands, for copying.
func (d *decoder) since(start []byte) []byte { return start[:len(start)-len(d.b)] }

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) amount() events.Amount {
	txt := d.bytes()
	q := make([]byte, 0, len(txt)+2)
	q = append(append(append(q, '"'), txt...), '"')
	var a events.Amount
	if err := a.UnmarshalJSON(q); err != nil {
		panic(fmt.Sprintf("enforcer: retained amount %q: %v", txt, err))
	}
	return a
}
