package main

// tally events restore: loads a dump (tally events dump) back into a
// ledger's partition streams, byte for byte, for disaster recovery.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/streams"
)

// restoreWindow is how many appends a restore keeps in flight before it
// checks their acks.
const restoreWindow = 256

func runEventsRestore(ctx context.Context, e *env, args []string) int {
	var (
		lf         ledgerFlags
		file       string
		dataDir    string
		partitions int
		replicas   int
	)
	fs := e.flagSet("events restore", "events restore --file DUMP (--nats-url URLS | --data-dir DIR) [--partitions P] [--replicas R]\n\n"+
		"Load a dump of whole partitions (tally events dump, without filters) back into a\n"+
		"ledger, byte for byte: each line is checked strictly and against its partition's\n"+
		"hash chain, then appended with its event id and a fence on the stream's last\n"+
		"sequence, so it lands at the sequence it had. The target's partition streams must be\n"+
		"empty or hold a beginning of the dump (a restore that was interrupted resumes).\n"+
		"Run it before any enforcer serves the target, then run tally audit verify.\n"+
		"--data-dir restores into the file store of an embedded server (tally serve\n"+
		"--data-dir DIR), which must not be running.")
	lf.register(fs)
	fs.StringVar(&file, "file", "", "the dump, JSON Lines as tally events dump writes them (- reads stdin)")
	fs.StringVar(&dataDir, "data-dir", "", "restore into this embedded ledger's directory instead of the servers of --nats-url")
	fs.IntVar(&partitions, "partitions", 0, "P of the ledger to create when the target has none (it must be the dumped ledger's P); an existing ledger keeps its own")
	fs.IntVar(&replicas, "replicas", 1, "replicas of the partition streams when the ledger is created (3 on a cluster)")
	if code := e.parseCommand(fs, args); code >= 0 {
		return code
	}
	if file == "" {
		return e.usageErr("--file is required: the dump to restore (- for stdin)")
	}
	if partitions < 0 || partitions > streams.MaxPartitions {
		return e.usageErr("--partitions %d: want 1 to %d", partitions, streams.MaxPartitions)
	}
	if replicas < 1 || replicas > 5 {
		return e.usageErr("--replicas %d: want 1 to 5", replicas)
	}
	if dataDir != "" {
		if name, ok := lf.auth.given(); ok {
			return e.usageErr("--%s secures a connection to the servers of --nats-url; --data-dir restores into an embedded ledger", name)
		}
		if fs.Lookup("nats-url").Value.String() != DefaultNATSURL {
			return e.usageErr("--data-dir and --nats-url exclude each other: restore into one ledger")
		}
	}
	in := io.Reader(e.stdin)
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return e.usageErr("--file: %v", err)
		}
		defer f.Close()
		in = f
	}

	var nc *nats.Conn
	if dataDir != "" {
		s, err := streams.StartServer(streams.ServerConfig{DataDir: dataDir, Listen: "127.0.0.1:-1",
			Partitions: max(partitions, 1)})
		if err != nil {
			return e.fail(err, "is tally serve running on this --data-dir? stop it first")
		}
		// A clean shutdown flushes and syncs the file store.
		defer func() {
			s.Shutdown()
			s.WaitForShutdown()
		}()
		if nc, err = nats.Connect("", nats.InProcessServer(s), nats.Name("tally-restore")); err != nil {
			return e.fail(err, "")
		}
	} else {
		opts, err := lf.auth.options()
		if err != nil {
			return e.usageErr("%v", err)
		}
		if nc, err = nats.Connect(lf.natsURL, append(opts, nats.Name("tally-restore"), nats.Timeout(lf.timeout), quietAsync())...); err != nil {
			return e.fail(fmt.Errorf("connect to NATS at %s: %w", lf.natsURL, err), connectFix(err))
		}
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(restoreWindow))
	if err != nil {
		return e.fail(err, "")
	}
	octx, cancel := context.WithTimeout(ctx, lf.timeout)
	layout, err := streams.Open(octx, js)
	cancel()
	switch {
	case errors.Is(err, streams.ErrNoLedger) && partitions == 0:
		return e.usageErr("the target holds no ledger: give --partitions, the P of the dumped ledger")
	case errors.Is(err, streams.ErrNoLedger):
		// Check the whole dump against P before creating anything: a
		// ledger created with the wrong P could not be taken back.
		if file == "-" {
			return e.usageErr("--file -: creating a ledger needs the dump in a file, read twice (checked first, then restored)")
		}
		if code := e.checkDump(ctx, file, &restorer{ctx: ctx, p: partitions, parts: map[int]*restorePart{}, check: true},
			"nothing was created or appended"); code >= 0 {
			return code
		}
		octx, cancel := context.WithTimeout(ctx, max(lf.timeout, 30*time.Second))
		layout, err = streams.Ensure(octx, js, streams.Config{Partitions: partitions, Replicas: replicas, RequirePartitions: true})
		cancel()
		if err != nil {
			return e.fail(fmt.Errorf("create the ledger: %w", err), "")
		}
	case err != nil:
		return e.fail(err, tryRunning)
	case partitions != 0 && partitions != layout.Partitions:
		return e.usageErr("--partitions %d: the target ledger has P = %d, fixed when it was created", partitions, layout.Partitions)
	}

	// A dump in a file is checked whole against what every partition
	// already holds before anything is appended (from stdin, as it comes).
	if file != "-" {
		if code := e.checkDump(ctx, file, &restorer{ctx: ctx, js: js, p: layout.Partitions, parts: map[int]*restorePart{}, check: true},
			"nothing was appended"); code >= 0 {
			return code
		}
	}
	r := &restorer{ctx: ctx, js: js, p: layout.Partitions, parts: map[int]*restorePart{}, timeout: lf.timeout}
	if err := r.run(in); err != nil {
		return e.fail(err, "what was appended before it stays, in order; fix the dump or the target and run the restore again: it resumes where each partition stands")
	}
	if dataDir == "" {
		// A ledger served by tally serve with group fsync acknowledged the
		// appends before they were on disk: its barrier syncs them before
		// the restore says it is done (no responder: the servers' own
		// sync mode holds). With --data-dir the clean shutdown syncs.
		sctx, cancel := context.WithTimeout(ctx, lf.timeout)
		_, err := streams.DialBarrier(sctx, nc)
		cancel()
		if err != nil {
			return e.fail(fmt.Errorf("every event is appended, but the server's tally serve did not sync them to disk: %w", err),
				"run the restore again once tally serve syncs: it finds every event there and appends nothing")
		}
	}
	for n := range layout.Partitions {
		rp := r.parts[n]
		if rp == nil {
			rp = &restorePart{}
		}
		fmt.Fprintf(e.stdout, "partition %d: %d events (%d already there, %d appended)\n", n, rp.seq, min(rp.stored, rp.seq), rp.seq-min(rp.stored, rp.seq))
	}
	fmt.Fprintln(e.stdout, "restored: check it with tally audit verify")
	return exitOK
}

// checkDump runs r, a checking restorer, over the dump in file.
func (e *env) checkDump(ctx context.Context, file string, r *restorer, nothing string) int {
	f, err := os.Open(file)
	if err != nil {
		return e.usageErr("--file: %v", err)
	}
	defer f.Close()
	if err := r.run(f); err != nil {
		return e.fail(err, nothing)
	}
	return -1
}

// restorer appends a dump's lines to their partition streams.
type restorer struct {
	ctx     context.Context
	js      jetstream.JetStream
	p       int
	parts   map[int]*restorePart
	pending []restorePending
	check   bool          // check only: append nothing (and read no stream without js)
	timeout time.Duration // for the acks of the appends in flight
}

// restorePart is where a restore stands in one partition.
type restorePart struct {
	seq    uint64 // lines of this partition read so far
	hash   string // chain hash of the last of them
	stored uint64 // events the stream held when the restore began
	last   []byte // the stored event at seq stored
}

type restorePending struct {
	line int
	f    jetstream.PubAckFuture
}

func (r *restorer) run(in io.Reader) error {
	br := bufio.NewReaderSize(in, 64<<10)
	for line := 1; ; line++ {
		raw, err := br.ReadBytes('\n')
		if err == io.EOF && len(raw) == 0 {
			break
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("line %d: %w", line, err)
		}
		raw = bytes.TrimSuffix(raw, []byte("\n"))
		if err := r.line(line, raw); err != nil {
			return err
		}
	}
	if err := r.settle(); err != nil {
		return err
	}
	for n, rp := range r.parts {
		if rp.seq < rp.stored {
			return fmt.Errorf("partition %d: the target holds %d events, the dump only %d: it is not a beginning of this dump", n, rp.stored, rp.seq)
		}
	}
	return nil
}

// line checks one line and appends it unless the target holds it already.
func (r *restorer) line(line int, raw []byte) error {
	if len(raw) > streams.MaxPayload {
		return fmt.Errorf("line %d: %d bytes, more than an event can be (%d)", line, len(raw), streams.MaxPayload)
	}
	ev, err := events.Decode(raw)
	if err != nil {
		return fmt.Errorf("line %d: %w", line, err)
	}
	n := ev.Partition
	if n < 0 || n >= r.p {
		return fmt.Errorf("line %d: partition %d: the target ledger has partitions 0 to %d (was the dump made with another P?)", line, n, r.p-1)
	}
	if ev.Root != "" && streams.Partition(ev.Root, r.p) != n {
		return fmt.Errorf("line %d: root %s is on partition %d in a ledger of P = %d, the event says %d: the dump was made with another P",
			line, ev.Root, streams.Partition(ev.Root, r.p), r.p, n)
	}
	rp, err := r.part(n)
	if err != nil {
		return fmt.Errorf("line %d: %w", line, err)
	}
	if ev.Prev != rp.hash {
		return fmt.Errorf("line %d: partition %d event %d: prev %q does not chain to the partition's previous event (%q): a dump to restore holds whole partitions in stream order (tally events dump without filters)",
			line, n, rp.seq+1, ev.Prev, rp.hash)
	}
	rp.seq++
	rp.hash = events.Hash(raw)
	switch {
	case rp.seq < rp.stored:
		return nil // its successors chain to it; the last stored one is compared
	case rp.seq == rp.stored:
		if !bytes.Equal(rp.last, raw) {
			return fmt.Errorf("line %d: partition %d already holds %d events, and its event %d differs from this line: restore into an empty ledger, or one an interrupted restore of this dump began",
				line, n, rp.stored, rp.seq)
		}
		return nil
	}
	if r.check {
		return nil
	}
	msg := nats.NewMsg(streams.EventSubject(n, ev.Root, string(ev.Type)))
	msg.Data = raw
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(rp.seq-1, 10))
	f, err := r.js.PublishMsgAsync(msg)
	if err != nil {
		return fmt.Errorf("line %d: append: %w", line, err)
	}
	r.pending = append(r.pending, restorePending{line: line, f: f})
	if len(r.pending) >= restoreWindow {
		return r.settle()
	}
	return nil
}

// part returns partition n's state, reading the target stream's on first use.
func (r *restorer) part(n int) (*restorePart, error) {
	if rp := r.parts[n]; rp != nil {
		return rp, nil
	}
	if r.js == nil { // checking a dump for a ledger yet to be created
		r.parts[n] = &restorePart{}
		return r.parts[n], nil
	}
	// Appends in flight to other partitions do not matter here.
	s, err := r.js.Stream(r.ctx, streams.StreamName(n))
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	info, err := s.Info(r.ctx)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	rp := &restorePart{stored: info.State.LastSeq}
	if rp.stored > 0 {
		m, err := s.GetMsg(r.ctx, rp.stored)
		if err != nil {
			return nil, fmt.Errorf("partition %d: read its event %d: %w", n, rp.stored, err)
		}
		rp.last = m.Data
	}
	r.parts[n] = rp
	return rp, nil
}

// settle waits for the appends in flight and fails on the first refused.
func (r *restorer) settle() error {
	defer func() { r.pending = r.pending[:0] }()
	deadline := time.NewTimer(r.timeout)
	defer deadline.Stop()
	for _, p := range r.pending {
		select {
		case <-p.f.Ok():
		case err := <-p.f.Err():
			return fmt.Errorf("line %d: append refused: %w", p.line, err)
		case <-deadline.C:
			return fmt.Errorf("line %d: no ack within --timeout %s", p.line, r.timeout)
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
	return nil
}
