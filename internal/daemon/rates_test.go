package daemon

import (
	"math"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/hist"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// A series gives the rate over the last window: the newest sample
// against the newest one at least a window older.
func TestRateSeriesCoversTheLastWindow(t *testing.T) {
	var s rateSeries
	if _, _, ok := s.rate(); ok {
		t.Fatal("rate from no samples")
	}
	s.add(ratePoint{at(0), 0}, 1, time.Second)
	if _, _, ok := s.rate(); ok {
		t.Fatal("rate from one sample")
	}
	s.add(ratePoint{at(1000), 1000}, 1, time.Second)
	s.add(ratePoint{at(2000), 5000}, 1, time.Second) // 4000/s in the last second
	r, span, ok := s.rate()
	if !ok || r != 4000 || span != time.Second {
		t.Fatalf("rate = %v over %v (ok %v), want 4000/s over 1s", r, span, ok)
	}
	// A sample only half a window later still reaches back a whole window.
	s.add(ratePoint{at(2500), 6000}, 1, time.Second)
	r, span, _ = s.rate()
	if span != 1500*time.Millisecond || r != 5000/1.5 {
		t.Fatalf("rate = %v over %v, want %v over 1.5s", r, span, 5000/1.5)
	}
}

// A heartbeat that was not renewed since the last look adds nothing; a
// restarted member (new boot, or a counter that went back) starts over
// rather than reporting a negative or huge rate.
func TestRateSeriesIgnoresRepeatsAndRestarts(t *testing.T) {
	var s rateSeries
	s.add(ratePoint{at(0), 100}, 1, time.Second)
	s.add(ratePoint{at(0), 100}, 1, time.Second)
	if _, _, ok := s.rate(); ok {
		t.Fatal("a repeated sample made a rate")
	}
	s.add(ratePoint{at(500), 600}, 1, time.Second)
	if r, _, _ := s.rate(); r != 1000 {
		t.Fatalf("rate %v, want 1000", r)
	}
	s.add(ratePoint{at(1000), 50}, 1, time.Second) // counter went back
	if _, _, ok := s.rate(); ok {
		t.Fatal("rate across a counter reset")
	}
	s.add(ratePoint{at(1500), 80}, 2, time.Second) // new boot
	if _, _, ok := s.rate(); ok {
		t.Fatal("rate across a new boot")
	}
	s.add(ratePoint{at(2000), 580}, 2, time.Second)
	if r, _, _ := s.rate(); r != 1000 {
		t.Fatalf("rate after restart %v, want 1000", r)
	}
}

// The tracker derives members' rates from the hops in their heartbeats,
// timed by their arrival, skips this node (its own count is exact), and
// forgets members that left the table. Latency over the window is the
// difference of two histogram snapshots.
func TestRateTrackerMembersAndLatency(t *testing.T) {
	tr := newRateTracker(time.Second)
	var h hist.Histogram
	members := func(hops uint64, seen time.Time) []cluster.Member {
		return []cluster.Member{
			{Name: "a", Hops: 999, LastSeen: seen, Boot: 1}, // self: ignored
			{Name: "b", Hops: hops, LastSeen: seen, Boot: 7},
		}
	}

	h.Record(time.Hour) // before the window: must not count
	tr.sample(at(0), "a", 0, h.Snapshot(), members(0, at(-100)))
	for range 10 {
		h.Record(50 * time.Microsecond)
	}
	tr.sample(at(1000), "a", 3000, h.Snapshot(), members(2000, at(900)))

	if r, span, ok := tr.selfRate(); !ok || r != 3000 || span != time.Second {
		t.Fatalf("self rate %v over %v (ok %v), want 3000 over 1s", r, span, ok)
	}
	if r, ok := tr.memberRate("b"); !ok || r != 2000 {
		t.Fatalf("member b rate %v (ok %v), want 2000 (2000 hops between heartbeats 1s apart)", r, ok)
	}
	if _, ok := tr.memberRate("a"); ok {
		t.Fatal("self tracked as a member")
	}
	lat, span, ok := tr.recentLatency()
	if !ok || lat.Count() != 10 || span != time.Second {
		t.Fatalf("recent latency: %d samples over %v (ok %v), want 10 over 1s", lat.Count(), span, ok)
	}
	if p99 := lat.Quantile(0.99); math.Abs(float64(p99-50*time.Microsecond)) > float64(10*time.Microsecond) {
		t.Fatalf("recent p99 %v, want about 50µs (the hour-long one is older)", p99)
	}

	tr.sample(at(2000), "a", 3000, h.Snapshot(), nil)
	if _, ok := tr.memberRate("b"); ok {
		t.Fatal("member b still tracked after it left the table")
	}
}
