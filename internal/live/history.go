// Package live keeps a short history of what the cluster did, as one node
// saw it, and serves the live page that draws it.
//
// The core (Ring, Build, CountRises) is pure: it turns samples into rates
// and events and does no I/O, so its rules are tested without sockets.
// Recorder is the shell that takes a sample every interval, and Page
// serves the page, whose assets are compiled into the binary.
package live

import (
	"encoding/json"
	"strconv"
	"time"
)

// Sample is what one node knows of the cluster at one moment.
type Sample struct {
	At     time.Time
	Leader string
	Nodes  []NodeSample // every known member, this node included

	// Lost and Reinjected are this node's own counters: they grow only
	// while it leads (the leader finds lost batons and injects them).
	Lost, Reinjected uint64
	// Epochs holds this node's known epoch of every baton, by id (0:
	// not known yet). Ring.Add turns it into EpochRises and drops it.
	Epochs []uint16
	// EpochRises counts the epoch rises this node learned since the
	// ring started: one for every lost baton injected again anywhere in
	// the cluster, since the leader announces each new epoch to all.
	// It shows losses on every node's page, not only the leader's.
	EpochRises uint64
}

// NodeSample is one member's line in a sample.
type NodeSample struct {
	Name  string
	State string
	Hops  uint64
	// HopsAt is when Hops was true: the sample's time for this node, the
	// arrival of the member's last heartbeat for a peer. Rates divide by
	// the time between heartbeats, not between samples, so a heartbeat
	// that misses a sample does not show as a dip and then a spike.
	HopsAt time.Time
}

// Ring keeps the last samples, oldest dropped first. It is not safe for
// concurrent use; Recorder guards it.
type Ring struct {
	buf   []Sample
	next  int // where the next sample goes
	count int

	epochs []uint16 // the last sample's epochs
	rises  uint64
}

// NewRing returns a ring that keeps the last n samples (n at least 2).
func NewRing(n int) *Ring {
	return &Ring{buf: make([]Sample, max(n, 2))}
}

// Add appends s, dropping the oldest sample when the ring is full. It
// fills in s.EpochRises from s.Epochs and the previous sample's epochs.
func (r *Ring) Add(s Sample) {
	r.rises += CountRises(r.epochs, s.Epochs)
	r.epochs = s.Epochs
	s.Epochs = nil
	s.EpochRises = r.rises

	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	r.count = min(r.count+1, len(r.buf))
}

// Samples returns the kept samples, oldest first.
func (r *Ring) Samples() []Sample {
	out := make([]Sample, 0, r.count)
	start := (r.next - r.count + len(r.buf)) % len(r.buf)
	for i := range r.count {
		out = append(out, r.buf[(start+i)%len(r.buf)])
	}
	return out
}

// CountRises returns how far the epochs in cur rose over those in prev.
// A baton whose epoch was unknown before (0, or beyond prev) is only
// learned, not raised: a node that just started and meets a baton at
// epoch 3 has not seen two losses.
func CountRises(prev, cur []uint16) uint64 {
	var n uint64
	for id, e := range cur {
		if id < len(prev) && prev[id] > 0 && e > prev[id] {
			n += uint64(e - prev[id])
		}
	}
	return n
}

// Series is one node's hop rate over time.
type Series struct {
	Node   string  `json:"node"`
	Points []Point `json:"points"`
}

// Point is a hop rate at a time. A point with no rate is a gap: the line
// breaks there (the node restarted, or was not heard for a while).
type Point struct {
	T    time.Time
	Rate float64
	Gap  bool
}

// MarshalJSON writes a point as [unix milliseconds, hops per second], the
// rate null for a gap: compact, since a page fetches thousands of them.
func (p Point) MarshalJSON() ([]byte, error) {
	b := []byte{'['}
	b = strconv.AppendInt(b, p.T.UnixMilli(), 10)
	b = append(b, ',')
	if p.Gap {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendFloat(b, p.Rate, 'f', 1, 64)
	}
	return append(b, ']'), nil
}

// Event is something an operator wants marked on the chart.
type Event struct {
	T    time.Time `json:"-"`
	Kind string    `json:"kind"` // EventLoss, EventLeader or EventState
	// Node is the new leader (leader) or the member that changed (state).
	Node  string `json:"node,omitempty"`
	State string `json:"state,omitempty"` // the member's new state
	// Loss counts, since the previous sample: batons this node found lost
	// and injected again (while leading), and epoch rises it learned.
	Lost       uint64 `json:"lost,omitempty"`
	Reinjected uint64 `json:"reinjected,omitempty"`
	Seen       uint64 `json:"seen,omitempty"`
}

// Kinds of Event.
const (
	EventLoss   = "loss"
	EventLeader = "leader"
	EventState  = "state"
)

// MarshalJSON adds the time as unix milliseconds, as in Point.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		TMS int64 `json:"t"`
		plain
	}{e.T.UnixMilli(), plain(e)})
}

// Build turns samples (oldest first) into a series per node, sorted by
// the order nodes first appear, and the events between samples. The
// first sample is the baseline: its counters and states are not events.
func Build(samples []Sample) ([]Series, []Event) {
	return buildSeries(samples), buildEvents(samples)
}

// gapAfter is how long a node may go unheard before its line breaks.
// Heartbeats come every BATON_HEARTBEAT_INTERVAL (500 ms by default); a
// member is suspect after a few missed ones.
const gapAfter = 5 * time.Second

func buildSeries(samples []Sample) []Series {
	type last struct {
		hops uint64
		at   time.Time
		seen bool
	}
	index := map[string]int{}
	var out []Series
	prev := map[string]last{}
	for _, s := range samples {
		for _, n := range s.Nodes {
			i, ok := index[n.Name]
			if !ok {
				i = len(out)
				index[n.Name] = i
				out = append(out, Series{Node: n.Name, Points: []Point{}})
			}
			p := prev[n.Name]
			if p.seen && !n.HopsAt.After(p.at) {
				continue // no new heartbeat since the last sample
			}
			prev[n.Name] = last{hops: n.Hops, at: n.HopsAt, seen: true}
			if !p.seen {
				continue // the first value only starts the line
			}
			dt := n.HopsAt.Sub(p.at)
			if n.Hops < p.hops || dt > gapAfter {
				// A restart (counters start again from zero) or a long
				// silence: no rate can be told for the interval.
				out[i].Points = append(out[i].Points, Point{T: n.HopsAt, Gap: true})
				continue
			}
			rate := float64(n.Hops-p.hops) / dt.Seconds()
			out[i].Points = append(out[i].Points, Point{T: n.HopsAt, Rate: rate})
		}
	}
	return out
}

func buildEvents(samples []Sample) []Event {
	var out []Event
	for i := 1; i < len(samples); i++ {
		prev, s := samples[i-1], samples[i]
		if ev := lossEvent(prev, s); ev.Kind != "" {
			out = append(out, ev)
		}
		if s.Leader != prev.Leader && s.Leader != "" {
			out = append(out, Event{T: s.At, Kind: EventLeader, Node: s.Leader})
		}
		was := map[string]string{}
		for _, n := range prev.Nodes {
			was[n.Name] = n.State
		}
		for _, n := range s.Nodes {
			if st, ok := was[n.Name]; !ok || st != n.State {
				out = append(out, Event{T: s.At, Kind: EventState, Node: n.Name, State: n.State})
			}
		}
	}
	return out
}

// lossEvent returns the loss event between two samples, or a zero Event.
// The counters live as long as the process, and so does the ring, so
// they never go down; a drop would be counted from zero.
func lossEvent(prev, s Sample) Event {
	delta := func(a, b uint64) uint64 {
		if b < a {
			return b
		}
		return b - a
	}
	ev := Event{
		T:          s.At,
		Lost:       delta(prev.Lost, s.Lost),
		Reinjected: delta(prev.Reinjected, s.Reinjected),
		Seen:       delta(prev.EpochRises, s.EpochRises),
	}
	if ev.Lost+ev.Reinjected+ev.Seen == 0 {
		return Event{}
	}
	ev.Kind = EventLoss
	return ev
}
