package events

import (
	"encoding/json"
	"fmt"
)

// Signed is an amount that may be negative on the wire: remaining balances
// after overage and budget-adjust deltas. It renders like Amount with a
// leading '-' when negative.
type Signed struct{ Amount }

// MarshalText renders the canonical signed form.
func (s Signed) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalJSON accepts a JSON string with an optional leading '-'.
func (s *Signed) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '"' {
		return fmt.Errorf("%w: amounts are decimal strings, not JSON %s", ErrAmount, jsonKind(b))
	}
	str, err := unquote(b)
	if err != nil {
		return err
	}
	a, err := ParseSignedAmount(str)
	if err != nil {
		return err
	}
	if a.IsZero() && len(str) > 0 && str[0] == '-' {
		return &AmountError{Input: str, Reason: "negative zero"}
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
		var a Signed
		if err := a.UnmarshalJSON(raw[unit]); err != nil {
			return &FieldError{Path: unit, Err: err}
		}
		out[unit] = a
	}
	*m = out
	return nil
}
