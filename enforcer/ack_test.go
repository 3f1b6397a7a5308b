package enforcer

import (
	"encoding/json"
	"testing"
)

// ackSeq must read exactly what encoding/json reads from the acks it takes,
// and take the server's plain acks.
func TestAckSeq(t *testing.T) {
	for _, c := range []struct {
		data string
		seq  uint64
		ok   bool
	}{
		{`{"stream":"TALLY_P0","seq":1}`, 1, true},
		{`{"stream":"TALLY_P7","seq":18446744073709551615}`, 18446744073709551615, true},
		{`{"stream":"TALLY_P0","domain":"hub","seq":42}`, 42, true},
		{`{"stream":"TALLY_P0","seq":0}`, 0, true},
		{`{"stream":"TALLY_P0","seq":18446744073709551616}`, 0, false}, // overflows
		{`{"stream":"TALLY_P0","seq":01}`, 0, false},
		{`{"stream":"TALLY_P0","seq":}`, 0, false},
		{`{"stream":"TALLY_P0","seq":1,"duplicate": true}`, 0, false},
		{`{"stream":"TALLY_P0","seq":3,"batch":"p0-1","count":3}`, 0, false},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"},"stream":"TALLY_P0","seq":0}`, 0, false},
		{`{"stream":"TALLY_P0","seq":1} `, 0, false},
		{`{"stream":"TAL\"LY","seq":1}`, 0, false},
		{`{"stream":"TALLY_P0","seq":-1}`, 0, false},
		{`{"stream":"TALLY_P0","seq":1.0}`, 0, false},
		{``, 0, false},
	} {
		seq, ok := ackSeq([]byte(c.data))
		if seq != c.seq || ok != c.ok {
			t.Errorf("ackSeq(%s) = %d, %v; want %d, %v", c.data, seq, ok, c.seq, c.ok)
		}
	}
}

// FuzzAckSeq: whatever ackSeq takes, encoding/json reads as a plain ack
// of the same sequence.
func FuzzAckSeq(f *testing.F) {
	for _, s := range []string{`{"stream":"TALLY_P0","seq":1}`, `{"stream":"S","domain":"d","seq":9}`,
		`{"stream":"S","seq":1,"duplicate": true}`, `{"stream":"S","seq":99999999999999999999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, ok := ackSeq(data)
		if !ok {
			return
		}
		var a pubAck
		if err := json.Unmarshal(data, &a); err != nil || a.Error != nil || a.Duplicate || a.Seq != seq {
			t.Fatalf("ackSeq(%q) = %d; encoding/json: %+v, %v", data, seq, a, err)
		}
	})
}
