package bench

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// The contract floor's events are tally's: they decode strictly as the
// events the tally phase's steps produce, and its answers as tally's
// answers to them.
func TestContractEvents(t *testing.T) {
	load := newTallyLoad(Config{Roots: 3, Clients: 2, Attempts: 1}, "01JTAGTAGTAGTAGTAGTAGTAGTA")
	evs, err := contractEvents(load)
	if err != nil {
		t.Fatal(err)
	}
	for op, typ := range map[events.Op]events.Type{events.OpReserve: events.TypeReservationGranted,
		events.OpCommit: events.TypeReservationCommit, events.OpRelease: events.TypeReservationReleased} {
		e := evs[op]
		ev, err := events.Decode(e.event)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if ev.Type != typ || e.typ != string(typ) || ev.Root != load.roots[0] {
			t.Errorf("%s: event %s (%s) on %s", op, ev.Type, e.typ, ev.Root)
		}
		r, _ := events.ResultOf(ev, events.EventRef{Partition: ev.Partition, Seq: 1 << 20})
		if want := events.AppendResultAnswer(nil, r); string(e.answer) != string(want) {
			t.Errorf("%s: answer\n%s\nwant\n%s", op, e.answer, want)
		}
		if !strings.Contains(string(e.answer), `"instances":[{`) {
			t.Errorf("%s: answer without instances: %s", op, e.answer)
		}
	}
	if d := evs[events.OpDecide]; d.event != nil || !strings.HasPrefix(string(d.answer), `{"result":{"decision":"granted"`) {
		t.Errorf("decide: event %q, answer %s", d.event, d.answer)
	}
}

// The floor's responders receive requests through the mapping, append the
// op's event to the partition's stream on the event's subject, fenced and
// with a message id, and answer with tally's answer once it is acked. An
// append that finds the stream moved under it fails its fence, and its
// request is answered with an error.
func TestContractFloor(t *testing.T) {
	const p = 2
	srv, nc, js := scratchServer(t)
	ctx := context.Background()
	if err := createContractStreams(ctx, js, p, 1); err != nil {
		t.Fatal(err)
	}
	if err := mapContract([]*server.Server{srv}, p); err != nil {
		t.Fatal(err)
	}
	load := newTallyLoad(Config{Roots: 4, Clients: 2, Attempts: 1}, "01JTAGTAGTAGTAGTAGTAGTAGTA")
	evs, err := contractEvents(load)
	if err != nil {
		t.Fatal(err)
	}
	subs, err := subscribeContract(nc, p, evs)
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribeAll(subs)
	under := load.under(contractFamily)
	request := func(subject string) string {
		t.Helper()
		m, err := nc.Request(subject, []byte(`{}`), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		return string(m.Data)
	}

	appended := map[int]uint64{}
	for r, root := range load.roots {
		n := streams.Partition(root, p)
		for _, op := range []events.Op{events.OpReserve, events.OpCommit, events.OpRelease} {
			subj := map[events.Op]string{events.OpReserve: under.subjects[r].reserve, events.OpCommit: under.subjects[r].commit,
				events.OpRelease: under.subjects[r].release}[op]
			if got := request(subj); got != string(evs[op].answer) {
				t.Fatalf("%s: answer %s", subj, got)
			}
			appended[n]++
			stream, err := js.Stream(ctx, contractStream(n))
			if err != nil {
				t.Fatal(err)
			}
			m, err := stream.GetMsg(ctx, appended[n])
			if err != nil {
				t.Fatalf("%s: message %d of partition %d: %v", subj, appended[n], n, err)
			}
			if want := string(contractFamily) + ".ev." + strconv.Itoa(n) + "." + root + "." + evs[op].typ; m.Subject != want {
				t.Errorf("%s: appended on %s, want %s", subj, m.Subject, want)
			}
			if string(m.Data) != string(evs[op].event) || m.Header.Get(jetstream.MsgIDHeader) == "" {
				t.Errorf("%s: appended %d bytes with id %q", subj, len(m.Data), m.Header.Get(jetstream.MsgIDHeader))
			}
		}
		if got := request(under.subjects[r].decide); got != string(evs[events.OpDecide].answer) {
			t.Errorf("decide: answer %s", got)
		}
	}
	if len(appended) != p {
		t.Fatalf("the roots reached partitions %v, want all %d", appended, p)
	}

	// Another writer appends to partition 0's stream: the responder's next
	// append expects the sequence it last saw, and fails.
	root := ""
	for _, r := range load.roots {
		if streams.Partition(r, p) == 0 {
			root = r
		}
	}
	if _, err := js.Publish(ctx, string(contractFamily)+".ev.0."+root+".reservation.granted", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := request(string(contractFamily) + ".req." + root + ".reserve"); !strings.HasPrefix(got, `{"error":{"code":"APPEND_FAILED"`) ||
		!strings.Contains(got, "10071") {
		t.Errorf("an append past another writer's: answer %s", got)
	}
	if got := request(string(contractFamily) + ".req." + root + ".refund"); !strings.HasPrefix(got, errAnswerPrefix+codeBadAnswer) {
		t.Errorf("an unknown op: answer %s", got)
	}

	if err := unmapContract([]*server.Server{srv}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request(string(contractFamily)+".req."+root+".reserve", []byte(`{}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("after unmapping: %v, want no responders", err)
	}
}
