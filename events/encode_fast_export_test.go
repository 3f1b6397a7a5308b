package events

// The fast encoders without their json.Marshal fallback, so the
// differential tests in encode_fast_test.go compare them with encoding/json
// instead of comparing encoding/json with itself.
var (
	EncodeEventFast   = encodeEvent
	AppendRequestFast = appendRequest
	PlainUnit         = plainUnit
)
