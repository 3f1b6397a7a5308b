package streams

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRetrySettling: an error a server answers while it loads an account
// is retried, but for settleMax only, long before the caller's deadline;
// an error that is neither settling nor transient is returned at once.
func TestRetrySettling(t *testing.T) {
	storeFailed := &jetstream.APIError{Code: 500, ErrorCode: errCodeStreamCreate, Description: "error creating store for stream"}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	calls := 0
	err := retry(ctx, func(context.Context) error {
		if calls++; calls < 3 {
			return jetstream.ErrJetStreamNotEnabled
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("settling twice, then success: err %v after %d calls, want nil after 3", err, calls)
	}

	calls = 0
	began := time.Now()
	err = retry(ctx, func(context.Context) error { calls++; return storeFailed })
	took := time.Since(began)
	if !errors.Is(err, storeFailed) || ctx.Err() != nil {
		t.Errorf("settling for good: err %v, ctx %v; want the server's error, ctx alive", err, ctx.Err())
	}
	if took < settleMax || took > settleMax+backoffMax+time.Second {
		t.Errorf("settling for good: gave up after %v (%d calls), want settleMax %v and at most one backoff more", took, calls, settleMax)
	}

	calls = 0
	final := errors.New("stream name already in use with a different configuration")
	if err := retry(ctx, func(context.Context) error { calls++; return final }); !errors.Is(err, final) || calls != 1 {
		t.Errorf("a final error: err %v after %d calls, want it after 1", err, calls)
	}
}
