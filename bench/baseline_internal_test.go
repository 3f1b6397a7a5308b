package bench

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/internal/natstest"
)

// TestB1Padding: the padded B1 responder appends records of the asked size
// (the request, then spaces) and answers with the ack, padded to the asked
// size too when answers are padded; unpadded, it appends the request as it
// came and answers with the ack as it came.
func TestB1Padding(t *testing.T) {
	_, nc, js := scratchServer(t)
	ctx := context.Background()
	if err := createScratch(ctx, js, b1Stream, b1AppendSubject, 1); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ pad, answerPad int }{{0, 0}, {1400, 0}, {0, 1300}, {1400, 1300}} {
		subs, err := subscribeB1(nc, 1, c.pad, c.answerPad)
		if err != nil {
			t.Fatal(err)
		}
		req := []byte(`{"idempotency_key":"k"}`)
		ans, err := nc.Request(b1Subject, req, 5*time.Second)
		unsubscribeAll(subs)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		var ack jetstream.PubAck
		if err := json.Unmarshal(ans.Data, &ack); err != nil || ack.Stream != b1Stream || ack.Sequence != uint64(i+1) {
			t.Fatalf("%+v: answer %q is not the ack of seq %d (%v)", c, ans.Data, i+1, err)
		}
		if c.answerPad > 0 && len(ans.Data) != c.answerPad {
			t.Errorf("%+v: answer of %d bytes, want %d", c, len(ans.Data), c.answerPad)
		}
		if c.answerPad == 0 && strings.HasSuffix(string(ans.Data), " ") {
			t.Errorf("%+v: unpadded answer %q is padded", c, ans.Data)
		}
		stream, err := js.Stream(ctx, b1Stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		want := max(c.pad, len(req))
		if len(m.Data) != want || string(m.Data[:len(req)]) != string(req) {
			t.Errorf("%+v: appended %d bytes %q…, want %d starting with the request", c, len(m.Data), m.Data[:min(len(m.Data), 40)], want)
		}
	}
}

// scratchServer starts a server with JetStream for the test and returns it,
// a connection to it and a JetStream context on that connection.
func scratchServer(t *testing.T) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return srv, nc, js
}
