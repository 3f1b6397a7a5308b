package events

// The fast encoders without their json.Marshal fallback, so the
// differential tests in encode_fast_test.go compare them with encoding/json
// instead of comparing encoding/json with itself.
var (
	EncodeEventFast   = func(ev *Event) ([]byte, bool) { raw, _, ok := encodeEvent(ev); return raw, ok }
	AppendRequestFast = appendRequest
	PlainUnit         = plainUnit
)
