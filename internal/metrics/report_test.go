package metrics

import (
	"reflect"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/hist"
)

func snapshotAt(at time.Time, hops uint64) Snapshot {
	return Snapshot{
		At: at, Hops: hops, Counter: hops + 7,
		Members: [4]int{3, 1, 0, 1}, Leader: "n1", IsLeader: true, Routes: 3, Parked: 2,
		Lost: 1, Reinjected: 1, Fenced: 4, Bad: 5,
		DiscoveryAccepted: 10,
		DiscoveryDropped:  map[string]uint64{"auth": 2, "replay": 0},
	}
}

// An interval reports what changed between two snapshots, the rate over
// its own length, and latency percentiles of that interval alone: the
// slow hops recorded before it do not show.
func TestIntervalReportsChangesOfItsOwn(t *testing.T) {
	var h hist.Histogram
	for range 100 {
		h.Record(time.Second) // before the interval
	}
	t0 := time.Unix(1000, 0)
	prev := snapshotAt(t0, 1000)
	prev.Latency = h.Snapshot()

	for i := range 100 {
		h.Record(time.Duration(i+1) * time.Microsecond) // 1..100 µs
	}
	cur := snapshotAt(t0.Add(2*time.Second), 5000)
	cur.Lost, cur.Reinjected, cur.Fenced, cur.Bad = 3, 2, 4, 9
	cur.DiscoveryAccepted = 15
	cur.DiscoveryDropped = map[string]uint64{"auth": 7, "replay": 0}
	cur.Latency = h.Snapshot()

	r := Interval(prev, cur)
	if r.Elapsed != 2*time.Second || r.HopsDelta != 4000 || r.HopRate != 2000 {
		t.Errorf("elapsed %v, hops %d, rate %v; want 2s, 4000, 2000/s", r.Elapsed, r.HopsDelta, r.HopRate)
	}
	if r.LostDelta != 2 || r.ReinjDelta != 1 || r.FencedDelta != 0 || r.BadDelta != 4 || r.AcceptDelta != 5 {
		t.Errorf("deltas lost %d reinj %d fenced %d bad %d accepted %d; want 2 1 0 4 5",
			r.LostDelta, r.ReinjDelta, r.FencedDelta, r.BadDelta, r.AcceptDelta)
	}
	if want := map[string]uint64{"auth": 5, "replay": 0}; !reflect.DeepEqual(r.DroppedDelta, want) {
		t.Errorf("dropped %v, want %v", r.DroppedDelta, want)
	}
	l := r.HopLatency
	if l.Samples != 100 {
		t.Fatalf("latency samples %d, want 100 (the interval's only)", l.Samples)
	}
	// The histogram places a value within 12.5% of itself.
	within := func(got, want time.Duration) bool {
		return got >= want*85/100 && got <= want*115/100
	}
	if !within(l.P50, 50*time.Microsecond) || !within(l.P99, 99*time.Microsecond) || !within(l.Max, 100*time.Microsecond) {
		t.Errorf("latency p50 %v p99 %v max %v; want about 50µs, 99µs, 100µs", l.P50, l.P99, l.Max)
	}
	if r.Hops != 5000 || r.Counter != 5007 || r.Leader != "n1" {
		t.Errorf("report carries hops %d counter %d leader %q, want cur's 5000 5007 n1", r.Hops, r.Counter, r.Leader)
	}
}

// A counter lower than before (a restart under the same name) counts
// from zero instead of wrapping to an enormous delta.
func TestIntervalCounterThatWentBackwards(t *testing.T) {
	t0 := time.Unix(0, 0)
	r := Interval(snapshotAt(t0, 1000), snapshotAt(t0.Add(time.Second), 30))
	if r.HopsDelta != 30 {
		t.Errorf("hops delta %d, want 30", r.HopsDelta)
	}
}

// An interval without latency samples reports none, and an interval of
// no length has no rate (the report taken at start).
func TestIntervalWithoutSamplesOrTime(t *testing.T) {
	s := snapshotAt(time.Unix(5, 0), 100)
	r := Interval(s, s)
	if r.HopRate != 0 || r.HopLatency != (Latency{}) {
		t.Errorf("rate %v latency %+v, want none", r.HopRate, r.HopLatency)
	}
}

// The DogStatsD points of an interval: every name with its type and
// extra tags, in a fixed order, counts as the interval's deltas and
// gauges as the values at its end.
func TestPointsOfAnInterval(t *testing.T) {
	var h hist.Histogram
	t0 := time.Unix(1000, 0)
	prev := snapshotAt(t0, 1000)
	h.Record(40 * time.Microsecond)
	cur := snapshotAt(t0.Add(time.Second), 1500)
	cur.Latency = h.Snapshot()
	cur.DiscoveryDropped = map[string]uint64{"replay": 1, "auth": 3}

	got := Points(Interval(prev, cur))
	lat := micros(hist.Snapshot(cur.Latency).Quantile(0.5))
	want := []Point{
		{NameCounter, Gauge, 1507, nil},
		{NameHops, Count, 500, nil},
		{NameHopRate, Gauge, 500, nil},
		{NameMembers, Gauge, 3, []string{"state:alive"}},
		{NameMembers, Gauge, 1, []string{"state:suspect"}},
		{NameMembers, Gauge, 0, []string{"state:dead"}},
		{NameMembers, Gauge, 1, []string{"state:left"}},
		{NameIsLeader, Gauge, 1, nil},
		{NameRoutes, Gauge, 3, nil},
		{NameParked, Gauge, 2, nil},
		{NameLost, Count, 0, nil},
		{NameReinjected, Count, 0, nil},
		{NameFenced, Count, 0, nil},
		{NameBad, Count, 0, nil},
		{NameDiscAccepted, Count, 0, nil},
		{NameDiscDropped, Count, 1, []string{"reason:auth"}},
		{NameDiscDropped, Count, 1, []string{"reason:replay"}},
		{NameLatencySamples, Count, 1, nil},
		{NameLatencyP50, Gauge, lat, nil},
		{NameLatencyP90, Gauge, lat, nil},
		{NameLatencyP99, Gauge, lat, nil},
		{NameLatencyMax, Gauge, lat, nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("points:\n got %v\nwant %v", got, want)
	}
	if lat < 35 || lat > 45 {
		t.Errorf("latency point %vµs, want about 40", lat)
	}
}

// Members are reported for every state, so a graph of dead members drops
// back to 0 instead of keeping its last value.
func TestPointsListEveryMemberState(t *testing.T) {
	var states []string
	for _, p := range Points(Report{}) {
		if p.Name == NameMembers {
			states = append(states, p.Tags[0])
		}
	}
	want := []string{"state:alive", "state:suspect", "state:dead", "state:left"}
	if !reflect.DeepEqual(states, want) {
		t.Errorf("member states %v, want %v", states, want)
	}
	if len(States) != int(cluster.StateLeft)+1 {
		t.Errorf("States lists %d states, cluster has %d", len(States), cluster.StateLeft+1)
	}
}
