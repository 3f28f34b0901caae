package hist

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Every duration falls in a bucket whose bounds hold it, within 12.5%.
func TestBucketBoundsHoldTheValue(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 100000 {
		d := time.Duration(rng.Int64N(int64(4 * time.Second)))
		i := bucket(d)
		if d < lower(i) || (i+1 < NumBuckets && d >= lower(i+1)) {
			t.Fatalf("%v in bucket %d = [%v, %v)", d, i, lower(i), lower(i+1))
		}
		if w := lower(i+1) - lower(i); d >= 8 && float64(w) > 0.125*float64(d)+1 {
			t.Fatalf("bucket of %v is %v wide", d, w)
		}
	}
	if bucket(-5) != 0 || bucket(time.Hour) != NumBuckets-1 {
		t.Error("out-of-range values not clamped")
	}
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(2, 2))
	var samples []time.Duration
	for range 20000 {
		d := time.Duration(10_000 + rng.ExpFloat64()*20_000) // around 10-100 µs
		samples = append(samples, d)
		h.Record(d)
	}
	slices.Sort(samples)
	s := h.Snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := samples[int(q*float64(len(samples)))-1]
		got := s.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.13 || diff < -0.13 {
			t.Errorf("p%v = %v, sorted samples say %v", q*100, got, want)
		}
	}
}

func TestSnapshotArithmetic(t *testing.T) {
	var a, b Histogram
	a.Record(time.Microsecond)
	before := a.Snapshot()
	a.Record(time.Millisecond)
	a.Record(time.Millisecond)
	b.Record(time.Second)

	delta := a.Snapshot().Sub(before)
	if delta.Count() != 2 || delta.Quantile(1) < 900*time.Microsecond {
		t.Errorf("delta: %d values, max %v", delta.Count(), delta.Quantile(1))
	}
	merged := delta.Add(b.Snapshot())
	if merged.Count() != 3 || merged.Quantile(1) < 900*time.Millisecond {
		t.Errorf("merged: %d values, max %v", merged.Count(), merged.Quantile(1))
	}
	if FromSparse(merged.Sparse()) != merged {
		t.Error("sparse round trip changed the snapshot")
	}
	var empty Snapshot
	if empty.Quantile(0.5) != 0 {
		t.Error("empty snapshot has a quantile")
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i & 0xffff))
	}
}
