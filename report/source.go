package report

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// Record is one stored event: the message's bytes as the stream holds them.
type Record struct {
	Partition int
	Seq       uint64
	Subject   string
	Data      []byte
}

// Query selects the records Read delivers from one partition.
type Query struct {
	Partition int
	// Root, if set, keeps only that root's events (a subject filter).
	Root string
	// Types, if set, keeps only events of those types.
	Types []events.Type
	// Since, if set, starts at the first message the server stored at or
	// after it. Storage time is not the event's at: callers start a margin
	// earlier and filter on at.
	Since time.Time
	// FromSeq, if set, starts at this stream sequence.
	FromSeq uint64
}

// ErrStop ends Read early without an error.
var ErrStop = errors.New("stop")

// startMargin is how much earlier than the first event time of interest
// Read starts by storage time: enforcers stamp at before appending, and a
// cluster's clocks differ a little.
const startMargin = 5 * time.Minute

// Read calls fn with every record of q, in stream order, up to the last
// message the stream held when Read started. It reads with an ordered
// consumer (no state left on the server).
func Read(ctx context.Context, js jetstream.JetStream, q Query, fn func(Record) error) error {
	stream, err := js.Stream(ctx, streams.StreamName(q.Partition))
	if err != nil {
		return fmt.Errorf("partition %d: %w", q.Partition, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("partition %d: %w", q.Partition, err)
	}
	last := info.State.LastSeq
	if last == 0 || q.FromSeq > last {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case q.FromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, q.FromSeq
	case !q.Since.IsZero():
		t := q.Since.Add(-startMargin)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	if q.Root != "" || len(q.Types) > 0 {
		root := q.Root
		if root == "" {
			root = "*"
		}
		if len(q.Types) == 0 {
			cfg.FilterSubjects = []string{streams.EventSubject(q.Partition, root, ">")}
		}
		for _, t := range q.Types {
			cfg.FilterSubjects = append(cfg.FilterSubjects, streams.EventSubject(q.Partition, root, string(t)))
		}
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("partition %d: %w", q.Partition, err)
	}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("partition %d: %w", q.Partition, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("partition %d: %w", q.Partition, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("partition %d: %w", q.Partition, err)
		}
		r := Record{Partition: q.Partition, Seq: md.Sequence.Stream, Subject: msg.Subject(), Data: msg.Data()}
		if err := fn(r); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
		if r.Seq >= last || md.NumPending == 0 {
			return nil
		}
	}
}

// ReadEvents is Read with each record decoded strictly; an undecodable
// event is an error naming its partition and sequence (the audit reads
// records instead, to report it and go on).
func ReadEvents(ctx context.Context, js jetstream.JetStream, q Query, fn func(Record, events.Event) error) error {
	var dec events.Decoder // fn is called on one goroutine
	return Read(ctx, js, q, func(r Record) error {
		ev, err := dec.Decode(r.Data)
		if err != nil {
			return fmt.Errorf("partition %d seq %d: %w (run tally audit verify)", r.Partition, r.Seq, err)
		}
		return fn(r, ev)
	})
}
