package projector

import "testing"

// BenchmarkViewApply measures the pure fold: events per second one
// partition's projection can absorb before KV writes.
func BenchmarkViewApply(b *testing.B) {
	w := newWorkload(b, 1)
	w.run(2000)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		v := NewView(0, 0)
		for _, s := range w.log {
			v.Apply(s.seq, s.ev)
		}
		v.Changes()
		n += len(w.log)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
