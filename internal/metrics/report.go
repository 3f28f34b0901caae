// Package metrics turns a node's counters into figures per interval and
// sends them out: DogStatsD lines for Datadog, a Prometheus collector for
// /metrics, and one summary log line.
//
// Nothing here runs per hop. The relay and the cluster layer keep their
// own atomic counters and a latency histogram; once per interval a Loop
// reads them into a Snapshot, the pure function Interval compares it with
// the previous one, and the resulting Report goes to every sink. The
// pure part (Snapshot, Interval, Points, the Prometheus series and the
// summary attributes) has no sockets, clocks or goroutines of its own.
package metrics

import (
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/hist"
)

// States lists the member states in the order metrics report them.
var States = []cluster.State{cluster.StateAlive, cluster.StateSuspect, cluster.StateDead, cluster.StateLeft}

// Snapshot is what a node's counters read at one instant. Counts are
// totals since the node started; the others are current values.
type Snapshot struct {
	At time.Time // when it was read (monotonic)

	Hops    uint64 // batons this node passed on
	Counter uint64 // highest baton counter this node has seen
	// Members counts the members this node knows, self included, by
	// state (indexed by cluster.State).
	Members  [4]int
	Leader   string // the leader as this node sees it; "" for none
	IsLeader bool
	Routes   int // peers with a NATS route
	Parked   int // batons held for lack of a live peer

	Lost       uint64 // batons this node, as leader, found lost
	Reinjected uint64 // ... and injected again
	Fenced     uint64 // stale copies (older epoch) dropped here
	Bad        uint64 // messages on the baton subject that were not batons

	DiscoveryAccepted uint64
	// DiscoveryDropped counts dropped discovery packets by reason (the
	// names of cluster.DropReasons).
	DiscoveryDropped map[string]uint64

	Latency hist.Snapshot // per-hop latencies, see relay.Relay.Latency
}

// Latency is the per-hop latency of one interval.
type Latency struct {
	Samples            uint64
	P50, P90, P99, Max time.Duration // 0 when Samples is 0
}

// Report is one interval: the snapshot at its end, and what changed
// since the snapshot at its start.
type Report struct {
	Snapshot
	Elapsed time.Duration // length of the interval

	HopsDelta    uint64
	HopRate      float64 // hops per second over the interval
	LostDelta    uint64
	ReinjDelta   uint64
	FencedDelta  uint64
	BadDelta     uint64
	AcceptDelta  uint64
	DroppedDelta map[string]uint64 // by reason, every reason of cur
	HopLatency   Latency
}

// Interval compares two snapshots of the same node, prev taken before
// cur. A counter that went backwards (which only a restart could do)
// counts from zero rather than wrapping around.
func Interval(prev, cur Snapshot) Report {
	r := Report{
		Snapshot:     cur,
		Elapsed:      cur.At.Sub(prev.At),
		HopsDelta:    delta(prev.Hops, cur.Hops),
		LostDelta:    delta(prev.Lost, cur.Lost),
		ReinjDelta:   delta(prev.Reinjected, cur.Reinjected),
		FencedDelta:  delta(prev.Fenced, cur.Fenced),
		BadDelta:     delta(prev.Bad, cur.Bad),
		AcceptDelta:  delta(prev.DiscoveryAccepted, cur.DiscoveryAccepted),
		DroppedDelta: make(map[string]uint64, len(cur.DiscoveryDropped)),
	}
	if r.Elapsed > 0 {
		r.HopRate = float64(r.HopsDelta) / r.Elapsed.Seconds()
	}
	for reason, n := range cur.DiscoveryDropped {
		r.DroppedDelta[reason] = delta(prev.DiscoveryDropped[reason], n)
	}
	r.HopLatency = latencyOf(cur.Latency.Sub(prev.Latency))
	return r
}

func delta(prev, cur uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func latencyOf(h hist.Snapshot) Latency {
	l := Latency{Samples: h.Count()}
	if l.Samples == 0 {
		return l
	}
	l.P50, l.P90, l.P99, l.Max = h.Quantile(0.50), h.Quantile(0.90), h.Quantile(0.99), h.Quantile(1)
	return l
}

// AliveMembers is the number of members in state alive.
func (s Snapshot) AliveMembers() int { return s.Members[cluster.StateAlive] }
