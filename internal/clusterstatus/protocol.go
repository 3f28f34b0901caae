// Package clusterstatus asks a running baton cluster what it is doing,
// over NATS: every node answers status requests and, on request, measures
// the round-trip time to each of its peers, so that one connection to any
// node yields the picture of the whole cluster. `batond status` is its
// command-line face.
//
// The Responder is the node's side; Query is the asking side; Format
// prints a Result as the table and matrix people read. Every subject
// starts with "baton.", like the rest of baton's traffic, and every
// payload is JSON, so the nats CLI can ask too (nats req baton.status x).
package clusterstatus

import (
	"fmt"
	"time"

	"github.com/baton-relay/baton/cluster"
)

// Subjects. A node answers on StatusSubject (every node answers one
// request there) and on its own StatusSubjectPrefix+name, PingSubjectPrefix
// +name and RTTSubjectPrefix+name.
const (
	// StatusSubject: every node answers a request with its status, the
	// same JSON document as its GET /status.
	StatusSubject = "baton.status"
	// StatusSubjectPrefix + node: that node alone answers with its status.
	StatusSubjectPrefix = "baton.status."
	// PingSubjectPrefix + node: that node answers at once with an empty
	// message. These are the probes behind the round-trip matrix.
	PingSubjectPrefix = "baton.ping."
	// RTTSubjectPrefix + node: that node pings the nodes an RTTRequest
	// names and answers with an RTTReply.
	RTTSubjectPrefix = "baton.rtt."
)

// Bounds on what an RTTRequest may ask for: a request is a command to
// send traffic, so it cannot ask for much of it.
const (
	MaxPings   = 100
	MaxTargets = 256
	MaxWithin  = 30 * time.Second
)

// RTTRequest asks a node to ping other nodes.
type RTTRequest struct {
	Targets []string `json:"targets"` // node names; the asked node itself is skipped
	Pings   int      `json:"pings"`   // pings per target, 1 to MaxPings
	// WithinMS bounds the whole measurement; targets not reached in time
	// are reported with an error.
	WithinMS int64 `json:"within_ms"`
}

// Validate reports a request a node must refuse.
func (r RTTRequest) Validate() error {
	switch {
	case len(r.Targets) == 0 || len(r.Targets) > MaxTargets:
		return fmt.Errorf("targets: 1 to %d names, got %d", MaxTargets, len(r.Targets))
	case r.Pings < 1 || r.Pings > MaxPings:
		return fmt.Errorf("pings: 1 to %d, got %d", MaxPings, r.Pings)
	case r.WithinMS < 1 || time.Duration(r.WithinMS)*time.Millisecond > MaxWithin:
		return fmt.Errorf("within_ms: 1 to %d, got %d", MaxWithin.Milliseconds(), r.WithinMS)
	}
	for _, t := range r.Targets {
		if err := cluster.ValidateName(t); err != nil {
			return fmt.Errorf("targets: %w", err)
		}
	}
	return nil
}

// RTTReply is a node's measurement of its round trips to the targets.
type RTTReply struct {
	Node  string           `json:"node"`
	Error string           `json:"error,omitempty"` // the request was refused
	RTT   map[string]Probe `json:"rtt"`             // by target
}

// Probe sums up the pings from one node to another. A ping is a NATS
// request from the asking node's in-process client, through its server
// and the route, to the target's server and in-process responder, and
// back: the time the cluster's own traffic takes between the two.
type Probe struct {
	Sent     int     `json:"sent"`
	Answered int     `json:"answered"`
	MinUS    float64 `json:"min_us"`
	MedianUS float64 `json:"median_us"`
	MaxUS    float64 `json:"max_us"`
	Error    string  `json:"error,omitempty"` // why some pings got no answer
}

// NodeStatus is the part of a node's status document (GET /status, and
// the answers on StatusSubject) that `batond status` shows. Unknown
// fields are ignored, so nodes of other versions still answer usefully.
type NodeStatus struct {
	Node          string   `json:"node"`
	Members       []string `json:"members"`
	Hops          uint64   `json:"hops"`
	Cluster       string   `json:"cluster"`
	Version       string   `json:"version"`
	UptimeSeconds float64  `json:"uptime_seconds"`
	Leader        string   `json:"leader"`
	Routes        []string `json:"routes"`
	MemberStates  []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"member_states"`
	Rate struct {
		HopsPerSecond float64 `json:"hops_per_second"`
	} `json:"rate"`
	Latency struct {
		Samples uint64  `json:"samples"`
		P50us   float64 `json:"p50_us"`
		P99us   float64 `json:"p99_us"`
		// Interval is the latency over the last rate interval; absent
		// from nodes of versions before it.
		Interval *struct {
			Samples uint64  `json:"samples"`
			P50us   float64 `json:"p50_us"`
			P99us   float64 `json:"p99_us"`
		} `json:"interval"`
	} `json:"latency"`
}

// stateOf returns the state s reports for member name, or "".
func (s NodeStatus) stateOf(name string) string {
	for _, m := range s.MemberStates {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}
