package events

import (
	"errors"
	"fmt"
)

// ErrTooLarge is returned for a request above MaxRequestBytes.
var ErrTooLarge = fmt.Errorf("request larger than %d bytes", MaxRequestBytes)

// ParseRequest decodes and validates the body of op strictly. It returns a
// pointer to the op's request type (*ReserveRequest for reserve and decide,
// *BudgetRef for budget-get and budget-delete, …). Errors are
// ErrTooLarge or name the offending field.
func ParseRequest(op Op, data []byte) (any, error) {
	if len(data) > MaxRequestBytes {
		return nil, ErrTooLarge
	}
	var (
		req      any
		validate func() error
	)
	switch op {
	case OpReserve, OpDecide:
		r := &ReserveRequest{}
		req, validate = r, func() error { return r.Validate(op == OpReserve) }
	case OpCommit:
		r := &CommitRequest{}
		req, validate = r, r.Validate
	case OpRelease:
		r := &ReleaseRequest{}
		req, validate = r, r.Validate
	case OpExtend:
		r := &ExtendRequest{}
		req, validate = r, r.Validate
	case OpCharge:
		r := &ChargeRequest{}
		req, validate = r, r.Validate
	case OpBalance:
		r := &BalanceRequest{}
		req, validate = r, r.Validate
	case OpReservationGet:
		r := &ReservationGetRequest{}
		req, validate = r, r.Validate
	case OpBudgetSet:
		r := &BudgetSetRequest{}
		req, validate = r, func() error { _, err := r.Budget(); return err }
	case OpBudgetGet, OpBudgetDelete:
		r := &BudgetRef{}
		req, validate = r, func() error { return r.Validate(op == OpBudgetDelete) }
	case OpBudgetList:
		r := &BudgetListRequest{}
		req, validate = r, func() error { return nil }
	case OpBudgetAdjust:
		r := &BudgetAdjustRequest{}
		req, validate = r, r.Validate
	default:
		return nil, fmt.Errorf("%w %q (one of reserve commit release extend charge decide balance reservation-get budget-set budget-get budget-list budget-delete budget-adjust)", ErrUnknownOp, op)
	}
	// The hot requests usually take the fast path (parse_fast.go); what it
	// declines, every malformed body included, the strict path decodes or
	// rejects with the message naming the field.
	if !decodeRequestFast(data, req) {
		if err := DecodeStrict(data, req); err != nil {
			return nil, err
		}
	}
	if err := validate(); err != nil {
		return nil, err
	}
	return req, nil
}

// ErrUnknownOp is wrapped for requests to an operation that does not exist.
var ErrUnknownOp = errors.New("unknown operation")
