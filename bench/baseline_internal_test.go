package bench

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/internal/natstest"
)

// TestB1Padding: the padded B1 responder appends records of the asked size
// (the request, then spaces) and still answers with the ack; unpadded, it
// appends the request as it came.
func TestB1Padding(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := createScratch(ctx, js, b1Stream, b1AppendSubject, 1); err != nil {
		t.Fatal(err)
	}
	for i, pad := range []int{0, 1400} {
		subs, err := subscribeB1(nc, 1, pad)
		if err != nil {
			t.Fatal(err)
		}
		req := []byte(`{"idempotency_key":"k"}`)
		ans, err := nc.Request(b1Subject, req, 5*time.Second)
		unsubscribeAll(subs)
		if err != nil {
			t.Fatalf("pad %d: %v", pad, err)
		}
		if len(ans.Data) == 0 || ans.Data[0] != '{' {
			t.Fatalf("pad %d: answer %q is not the ack", pad, ans.Data)
		}
		stream, err := js.Stream(ctx, b1Stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		want := max(pad, len(req))
		if len(m.Data) != want || string(m.Data[:len(req)]) != string(req) {
			t.Errorf("pad %d: appended %d bytes %q…, want %d starting with the request", pad, len(m.Data), m.Data[:min(len(m.Data), 40)], want)
		}
	}
}
