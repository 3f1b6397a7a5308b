package events

import (
	"encoding/json"
)

// Signed is an amount that may be negative on the wire: remaining balances
// after overage and budget-adjust deltas. It renders like Amount with a
// leading '-' when negative.
type Signed struct{ Amount }

// MarshalText renders the canonical signed form.
func (s Signed) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON accepts a JSON string with an optional leading '-'.
// A single signed amount (a remaining balance) decodes within the wide
// bounds; request deltas come in SignedAmounts, which keep 38/18.
func (s *Signed) UnmarshalJSON(b []byte) error {
	a, err := decodeAmountJSON(b, true, true)
	if err != nil {
		return err
	}
	s.Amount = a
	return nil
}

// SignedAmounts maps units to signed amounts.
type SignedAmounts map[string]Signed

// MarshalJSON renders units in byte order; a nil map is {}, not null.
func (m SignedAmounts) MarshalJSON() ([]byte, error) {
	if m == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]Signed(m))
}

// UnmarshalJSON decodes unit → signed amount, naming the unit in errors.
func (m *SignedAmounts) UnmarshalJSON(b []byte) error {
	raw, err := decodeObject(b)
	if err != nil {
		return err
	}
	out := make(SignedAmounts, len(raw))
	for _, unit := range sortedKeys(raw) {
		if err := ValidateUnit(unit); err != nil {
			return &FieldError{Path: unit, Err: err}
		}
		a, err := decodeAmountJSON(raw[unit], false, true)
		if err != nil {
			return &FieldError{Path: unit, Err: err}
		}
		out[unit] = Signed{a}
	}
	*m = out
	return nil
}
