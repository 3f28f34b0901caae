package metrics

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prometheus serves the same figures as the DogStatsD points, refreshed
// once per interval, under Prometheus's conventions: counters are
// running totals (the DogStatsD counts are their deltas) named _total,
// and latency is in seconds. Go runtime and process series (CPU, RSS,
// goroutines) come along, from client_golang's own collectors.
type promCollector struct {
	latest func() (Report, bool)

	counter, hopRate, members, isLeader, routes, parked *prometheus.Desc
	hops, lost, reinj, fenced, bad                      *prometheus.Desc
	accepted, dropped, latSamples, latency              *prometheus.Desc
}

// Prometheus names, also listed in README.md ("Metrics").
const (
	PromCounter        = "baton_counter"
	PromHops           = "baton_hops_total"
	PromHopRate        = "baton_hop_rate"
	PromMembers        = "baton_members"
	PromIsLeader       = "baton_is_leader"
	PromRoutes         = "baton_routes"
	PromParked         = "baton_batons_parked"
	PromLost           = "baton_batons_lost_total"
	PromReinjected     = "baton_batons_reinjected_total"
	PromFenced         = "baton_batons_fenced_total"
	PromBad            = "baton_batons_bad_total"
	PromDiscAccepted   = "baton_discovery_accepted_total"
	PromDiscDropped    = "baton_discovery_dropped_total"
	PromLatencySamples = "baton_hop_latency_samples_total"
	PromLatency        = "baton_hop_latency_seconds"
)

// PrometheusHandler returns the /metrics handler for the reports latest
// returns (false before the first one). node and cluster become the
// labels of every baton series. Each call has its own registry, so that
// several nodes in one process (tests, the demo) do not collide.
func PrometheusHandler(node, clusterName string, latest func() (Report, bool)) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newPromCollector(prometheus.Labels{"node": node, "cluster": clusterName}, latest),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func newPromCollector(labels prometheus.Labels, latest func() (Report, bool)) *promCollector {
	desc := func(name, help string, vars ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, vars, labels)
	}
	return &promCollector{
		latest:     latest,
		counter:    desc(PromCounter, "Highest baton counter this node has seen."),
		hopRate:    desc(PromHopRate, "Hops per second this node relayed over the last interval."),
		members:    desc(PromMembers, "Members this node knows, itself included, by state.", "state"),
		isLeader:   desc(PromIsLeader, "1 if this node sees itself as the leader, else 0."),
		routes:     desc(PromRoutes, "Peers this node has a NATS route to."),
		parked:     desc(PromParked, "Batons held for lack of a live peer."),
		hops:       desc(PromHops, "Batons this node passed on."),
		lost:       desc(PromLost, "Batons this node, as leader, found lost."),
		reinj:      desc(PromReinjected, "Lost batons this node injected again."),
		fenced:     desc(PromFenced, "Stale baton copies (an older epoch) dropped here."),
		bad:        desc(PromBad, "Messages on the baton subject that were not batons."),
		accepted:   desc(PromDiscAccepted, "Discovery packets accepted."),
		dropped:    desc(PromDiscDropped, "Discovery packets dropped, by reason.", "reason"),
		latSamples: desc(PromLatencySamples, "Per-hop latency measurements taken."),
		latency:    desc(PromLatency, "Per-hop latency quantiles over the last interval; absent without samples.", "quantile"),
	}
}

func (c *promCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.counter, c.hopRate, c.members, c.isLeader, c.routes, c.parked, c.hops,
		c.lost, c.reinj, c.fenced, c.bad, c.accepted, c.dropped, c.latSamples, c.latency,
	} {
		ch <- d
	}
}

func (c *promCollector) Collect(ch chan<- prometheus.Metric) {
	r, ok := c.latest()
	if !ok {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	total := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	gauge(c.counter, float64(r.Counter))
	total(c.hops, r.Hops)
	gauge(c.hopRate, r.HopRate)
	for _, s := range States {
		gauge(c.members, float64(r.Members[s]), s.String())
	}
	gauge(c.isLeader, b2f(r.IsLeader))
	gauge(c.routes, float64(r.Routes))
	gauge(c.parked, float64(r.Parked))
	total(c.lost, r.Lost)
	total(c.reinj, r.Reinjected)
	total(c.fenced, r.Fenced)
	total(c.bad, r.Bad)
	total(c.accepted, r.DiscoveryAccepted)
	for _, reason := range slices.Sorted(maps.Keys(r.DiscoveryDropped)) {
		total(c.dropped, r.DiscoveryDropped[reason], reason)
	}
	total(c.latSamples, r.Latency.Count())
	if l := r.HopLatency; l.Samples > 0 {
		for _, q := range []struct {
			q string
			d time.Duration
		}{{"0.5", l.P50}, {"0.9", l.P90}, {"0.99", l.P99}, {"1", l.Max}} {
			gauge(c.latency, q.d.Seconds(), q.q)
		}
	}
}
