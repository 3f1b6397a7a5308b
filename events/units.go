package events

import (
	"slices"
	"strings"
)

// UnitEntry is one unit's balance inside UnitBalances.
type UnitEntry struct {
	Unit string
	UnitBalance
}

// UnitBalances is an instance's balances by unit, in byte order of unit.
// On the wire it is a JSON object {"USD": {...}, "tokens": {...}}; in
// memory a sorted slice, because decisions build several per request and a
// map per instance dominated the core's cost.
type UnitBalances []UnitEntry

// Get returns the balance of unit u.
func (ub UnitBalances) Get(u string) (UnitBalance, bool) {
	i, ok := slices.BinarySearchFunc(ub, u, func(e UnitEntry, u string) int { return strings.Compare(e.Unit, u) })
	if !ok {
		return UnitBalance{}, false
	}
	return ub[i].UnitBalance, true
}

// Units returns the unit names in order.
func (ub UnitBalances) Units() []string {
	out := make([]string, len(ub))
	for i, e := range ub {
		out[i] = e.Unit
	}
	return out
}

// MarshalJSON renders the object form, keys in byte order.
func (ub UnitBalances) MarshalJSON() ([]byte, error) {
	return appendUnitBalances(make([]byte, 0, 96*len(ub)+2), ub), nil
}

// UnmarshalJSON decodes the object form strictly.
func (ub *UnitBalances) UnmarshalJSON(b []byte) error {
	if out, ok := fastUnitBalances(b); ok {
		*ub = out
		return nil
	}
	raw, err := decodeObject(b)
	if err != nil {
		return err
	}
	out := make(UnitBalances, 0, len(raw))
	for _, u := range sortedKeys(raw) {
		if err := ValidateUnit(u); err != nil {
			return &FieldError{Path: u, Err: err}
		}
		var v UnitBalance
		if err := strictUnmarshal(raw[u], &v); err != nil {
			return &FieldError{Path: u, Err: err}
		}
		out = append(out, UnitEntry{Unit: u, UnitBalance: v})
	}
	*ub = out
	return nil
}
