package enforcer

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ReplayWithDecoders is Replay with the given number of decoders, so that
// tests cover pools of other sizes than this machine's.
var ReplayWithDecoders = replay

// ReadReplayStalling runs Replay's reader over partition 0 from seq 1 up
// to last (which may lie beyond the stream's head, so the reader stalls)
// with stall as its patience, and returns how many messages it read and
// the error its last batch carried.
func ReadReplayStalling(ctx context.Context, stream jetstream.Stream, last uint64, stall time.Duration) (int, error) {
	saved := replayStall
	replayStall = stall
	defer func() { replayStall = saved }()
	in := make(chan *replayBatch, 1)
	go readReplay(ctx, stream, 1, last, []chan *replayBatch{in})
	n := 0
	var err error
	for b := range in {
		n += len(b.msgs)
		if b.err != nil {
			err = b.err
		}
	}
	return n, err
}

// SetSnapshotTurnHook makes h see every partition take and give back the
// snapshot turn, until restore is called (after the service has stopped).
func SetSnapshotTurnHook(h func(partition int, taken bool)) (restore func()) {
	snapshotTurnHook = h
	return func() { snapshotTurnHook = nil }
}
