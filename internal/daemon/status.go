package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/hist"
	"github.com/baton-relay/baton/internal/metrics"
	"github.com/baton-relay/baton/relay"
)

// Status is the JSON document served at GET /status. The fields node,
// members and hops are a fixed contract (scripts and tests read them);
// the others may grow.
type Status struct {
	Node    string   `json:"node"`
	Members []string `json:"members"` // alive members, self included, sorted
	Hops    uint64   `json:"hops"`    // batons this node passed on since start

	Cluster       string                 `json:"cluster"`
	Version       string                 `json:"version"`
	Boot          string                 `json:"boot"`
	UptimeSeconds float64                `json:"uptime_seconds"`
	Leader        string                 `json:"leader"`
	MemberStates  []MemberStatus         `json:"member_states"`
	Routes        []string               `json:"routes"` // peers with a NATS route
	RouteURL      string                 `json:"route_url"`
	ClientURL     string                 `json:"client_url"`
	Interface     string                 `json:"interface"`
	Batons        BatonStatus            `json:"batons"`
	Latency       LatencyStatus          `json:"latency"`
	Discovery     cluster.DiscoveryStats `json:"discovery"`
	BadHeartbeats uint64                 `json:"bad_heartbeats"`

	// Rate is this node's hop rate over the last RateInterval.
	Rate RateStatus `json:"rate"`
}

// RateStatus is a hop rate and the span it was measured over (about
// RateInterval; zero until the node has run for one interval).
type RateStatus struct {
	HopsPerSecond   float64 `json:"hops_per_second"`
	IntervalSeconds float64 `json:"interval_seconds"`
}

// MemberStatus is one row of the membership table as this node sees it.
type MemberStatus struct {
	Name string `json:"name"`
	// State is alive, suspect, dead or left.
	State cluster.State `json:"state"`
	// LastHeartbeatMS is how long ago its last heartbeat arrived; absent
	// for this node itself.
	LastHeartbeatMS *int64 `json:"last_heartbeat_ms,omitempty"`
	Hops            uint64 `json:"hops"`
	// HopsPerSecond is the member's hop rate over about the last
	// RateInterval: for this node its own count, for the others the hop
	// counts in their heartbeats, timed by when they arrived here. Zero
	// until two heartbeats have come, and for members not alive.
	HopsPerSecond float64 `json:"hops_per_second"`
}

// LatencyStatus gives the per-hop latency this node measured since start:
// when a baton comes back, the time since this node sent it divided by
// the hops it made in between (one clock, so no synchronisation needed).
type LatencyStatus struct {
	Samples uint64  `json:"samples"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	// Histogram is the raw count per bucket (see internal/hist), for
	// tools that want percentiles over an interval: take two and subtract.
	Histogram map[int]uint64 `json:"histogram"`
	// Interval is the same over the last RateInterval only; absent until
	// the node has run for one interval.
	Interval *LatencyWindow `json:"interval,omitempty"`
}

// LatencyWindow gives the per-hop latency measured over a recent span.
type LatencyWindow struct {
	Seconds float64 `json:"seconds"`
	Samples uint64  `json:"samples"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
}

// BatonStatus describes this node's part in the relay.
type BatonStatus struct {
	InFlight bool   `json:"in_flight"` // batons are known to circulate
	Injected uint64 `json:"injected"`  // batons this node injected
	Parked   int    `json:"parked"`    // held for lack of a live peer
	Bad      uint64 `json:"bad"`       // messages on the baton subject that were not batons
	// Direct lists the peers this node publishes batons to directly
	// (BATON_DIRECT); batons to the others take the route path.
	Direct []string `json:"direct"`
	// Lost and Reinjected count the batons this node, as leader, found
	// making no progress and injected again; Fenced counts stale copies
	// of such batons (an older epoch) that arrived here and were dropped.
	Lost       uint64 `json:"lost"`
	Reinjected uint64 `json:"reinjected"`
	Fenced     uint64 `json:"fenced"`
	// Duplicates counts copies of a baton's current epoch that arrived
	// behind a position already seen here (a second copy, or one forged
	// with nats pub) and were dropped. Zero unless someone forges batons.
	Duplicates uint64 `json:"duplicates"`
	// Unannounced counts copies of an epoch never announced here (a
	// baton forged with a made-up epoch), held and then dropped.
	Unannounced uint64 `json:"unannounced"`
	// Moving, on the leader only, is how many batons it saw move within
	// BATON_LOSS_TIMEOUT: equal to BATON_BATONS when none is lost.
	Moving *int `json:"moving,omitempty"`
}

// Status returns this node's current status.
func (d *Daemon) Status() Status {
	now := time.Now()
	v := d.node.View()

	st := Status{
		Node:          d.cfg.NodeName,
		Members:       v.Alive,
		Hops:          d.relay.Hops(),
		Cluster:       d.cfg.ClusterName,
		Version:       Version,
		Boot:          formatBoot(d.node.Boot()),
		UptimeSeconds: now.Sub(d.started).Seconds(),
		Leader:        relay.Leader(v.Relays, d.cfg.Leader),
		Routes:        d.node.Routes(),
		RouteURL:      d.node.RouteURL(),
		ClientURL:     d.node.ClientURL(),
		Interface:     d.iface,
		Batons: BatonStatus{
			InFlight:    v.Batons || d.relay.Seen(),
			Injected:    d.relay.Injected(),
			Parked:      d.relay.Parked(),
			Bad:         d.relay.Bad(),
			Direct:      d.relay.DirectPeers(),
			Lost:        d.relay.Lost(),
			Reinjected:  d.relay.Reinjected(),
			Fenced:      d.relay.Fenced(),
			Duplicates:  d.relay.Duplicates(),
			Unannounced: d.relay.Unannounced(),
		},
		Latency:       latencyStatus(d.relay.Latency()),
		Discovery:     d.node.DiscoveryStats(),
		BadHeartbeats: d.node.BadHeartbeats(),
	}
	if n, ok := d.relay.Moving(); ok {
		st.Batons.Moving = &n
	}
	d.addRates(&st)
	for _, m := range v.Members {
		ms := MemberStatus{Name: m.Name, State: m.State, Hops: m.Hops}
		if m.Name == d.cfg.NodeName {
			ms.Hops = st.Hops
			ms.HopsPerSecond = st.Rate.HopsPerSecond
		} else {
			ago := now.Sub(m.LastSeen).Milliseconds()
			ms.LastHeartbeatMS = &ago
			// A member whose heartbeats stopped keeps its last two;
			// its rate then describes the past, not now.
			if m.State == cluster.StateAlive {
				ms.HopsPerSecond, _ = d.rates.memberRate(m.Name)
			}
		}
		st.MemberStates = append(st.MemberStates, ms)
	}
	return st
}

// addRates fills in the figures over the last interval.
func (d *Daemon) addRates(st *Status) {
	if r, span, ok := d.rates.selfRate(); ok {
		st.Rate = RateStatus{HopsPerSecond: r, IntervalSeconds: span.Seconds()}
	}
	if h, span, ok := d.rates.recentLatency(); ok {
		l := latencyStatus(h)
		st.Latency.Interval = &LatencyWindow{
			Seconds: span.Seconds(), Samples: l.Samples, P50us: l.P50us, P99us: l.P99us,
		}
	}
}

func latencyStatus(h hist.Snapshot) LatencyStatus {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return LatencyStatus{
		Samples:   h.Count(),
		P50us:     us(h.Quantile(0.50)),
		P99us:     us(h.Quantile(0.99)),
		Histogram: h.Sparse(),
	}
}

func formatBoot(b uint64) string { return fmt.Sprintf("%016x", b) }

// Handler serves the status endpoint.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d.Status())
	})
	d.mountLive(mux)
	// The same figures as DogStatsD, for Prometheus; see internal/metrics.
	mux.Handle("GET /metrics", metrics.PrometheusHandler(d.cfg.NodeName, d.cfg.ClusterName, d.metrics.Latest))
	if d.cfg.PProf {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	return mux
}
