package events_test

import (
	"testing"

	"github.com/tallyledger/tally/events"
)

// benchGranted is the event the enforcer writes most: a reservation.granted
// against three instances of two units each.
func benchGranted() *events.Event { return sampleEvent(grantedData()) }

func BenchmarkEncodeGranted(b *testing.B) {
	ev := benchGranted()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		out, err := events.Encode(ev)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.ReportMetric(float64(n), "bytes/event")
}

func BenchmarkDecodeGranted(b *testing.B) {
	data, err := events.Encode(benchGranted())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	data, err := events.Encode(benchGranted())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		events.Hash(data)
	}
}

func BenchmarkParseAmount(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.ParseAmount("12345.000003"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRequestReserve(b *testing.B) {
	body := []byte(validBodies[events.OpReserve])
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.ParseRequest(events.OpReserve, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRequestHashReserve(b *testing.B) {
	req, err := events.ParseRequest(events.OpReserve, []byte(validBodies[events.OpReserve]))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		events.RequestHash(events.OpReserve, req)
	}
}
