package metrics

import (
	"maps"
	"math"
	"slices"
	"time"
)

// Kind is the DogStatsD type of a point.
type Kind uint8

const (
	// Gauge is a value at the end of the interval (|g).
	Gauge Kind = iota
	// Count is what was added during the interval (|c); Datadog sums
	// counts, so the interval's delta is sent, never a running total.
	Count
)

func (k Kind) String() string {
	if k == Count {
		return "c"
	}
	return "g"
}

// Point is one DogStatsD metric of an interval. The node's own tags
// (host and cluster) are the client's global tags, not listed here.
type Point struct {
	Name  string
	Kind  Kind
	Value float64
	Tags  []string
}

// Metric names, also listed in README.md ("Metrics").
const (
	NameCounter        = "baton.counter"
	NameHops           = "baton.hops"
	NameHopRate        = "baton.hop_rate"
	NameMembers        = "baton.members"
	NameIsLeader       = "baton.is_leader"
	NameRoutes         = "baton.routes"
	NameParked         = "baton.batons.parked"
	NameLost           = "baton.batons.lost"
	NameReinjected     = "baton.batons.reinjected"
	NameFenced         = "baton.batons.fenced"
	NameBad            = "baton.batons.bad"
	NameDiscAccepted   = "baton.discovery.accepted"
	NameDiscDropped    = "baton.discovery.dropped"
	NameLatencySamples = "baton.hop_latency.samples"
	// Per-hop latency quantiles of the interval, in microseconds; absent
	// in an interval without samples (an idle relay has no latency, and
	// a 0 would read as an infinitely fast one).
	NameLatencyP50 = "baton.hop_latency.p50"
	NameLatencyP90 = "baton.hop_latency.p90"
	NameLatencyP99 = "baton.hop_latency.p99"
	NameLatencyMax = "baton.hop_latency.max"
)

// Points turns a report into the DogStatsD points of its interval, in a
// stable order: members by state in States order, drop reasons sorted.
func Points(r Report) []Point {
	ps := []Point{
		{Name: NameCounter, Kind: Gauge, Value: float64(r.Counter)},
		{Name: NameHops, Kind: Count, Value: float64(r.HopsDelta)},
		// Hundredths of a hop per second are plenty, and keep the
		// line short.
		{Name: NameHopRate, Kind: Gauge, Value: math.Round(r.HopRate*100) / 100},
	}
	for _, s := range States {
		ps = append(ps, Point{Name: NameMembers, Kind: Gauge, Value: float64(r.Members[s]), Tags: []string{"state:" + s.String()}})
	}
	ps = append(ps,
		Point{Name: NameIsLeader, Kind: Gauge, Value: b2f(r.IsLeader)},
		Point{Name: NameRoutes, Kind: Gauge, Value: float64(r.Routes)},
		Point{Name: NameParked, Kind: Gauge, Value: float64(r.Parked)},
		Point{Name: NameLost, Kind: Count, Value: float64(r.LostDelta)},
		Point{Name: NameReinjected, Kind: Count, Value: float64(r.ReinjDelta)},
		Point{Name: NameFenced, Kind: Count, Value: float64(r.FencedDelta)},
		Point{Name: NameBad, Kind: Count, Value: float64(r.BadDelta)},
		Point{Name: NameDiscAccepted, Kind: Count, Value: float64(r.AcceptDelta)},
	)
	for _, reason := range slices.Sorted(maps.Keys(r.DroppedDelta)) {
		ps = append(ps, Point{Name: NameDiscDropped, Kind: Count, Value: float64(r.DroppedDelta[reason]), Tags: []string{"reason:" + reason}})
	}
	ps = append(ps, Point{Name: NameLatencySamples, Kind: Count, Value: float64(r.HopLatency.Samples)})
	if l := r.HopLatency; l.Samples > 0 {
		ps = append(ps,
			Point{Name: NameLatencyP50, Kind: Gauge, Value: micros(l.P50)},
			Point{Name: NameLatencyP90, Kind: Gauge, Value: micros(l.P90)},
			Point{Name: NameLatencyP99, Kind: Gauge, Value: micros(l.P99)},
			Point{Name: NameLatencyMax, Kind: Gauge, Value: micros(l.Max)},
		)
	}
	return ps
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
