package daemon

import (
	"os"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/metrics"
	"github.com/baton-relay/baton/relay"
)

// startMetrics starts the node's metrics loop (see internal/metrics): a
// report per BATON_METRICS_INTERVAL to DogStatsD when the DD_* variables
// ask for it, to the summary log line and to GET /metrics.
func (d *Daemon) startMetrics(target string) {
	d.metrics = metrics.StartLoop(metrics.LoopConfig{
		Interval:  d.cfg.MetricsInterval,
		Read:      d.metricsSnapshot,
		Node:      d.cfg.NodeName,
		Cluster:   d.cfg.ClusterName,
		DogStatsD: target,
		Logger:    d.log,
	})
}

// dogStatsDTarget reads the datadog-go library's own variables.
func dogStatsDTarget() (string, error) { return metrics.DogStatsDTarget(os.Getenv) }

// metricsSnapshot reads the counters of the node and its relay; all of
// them are atomics or copies, so it does not slow the relay.
func (d *Daemon) metricsSnapshot() metrics.Snapshot {
	v := d.node.View()
	disc := d.node.DiscoveryStats()
	s := metrics.Snapshot{
		Hops:              d.relay.Hops(),
		Counter:           d.relay.HighestCounter(),
		Leader:            relay.Leader(v.Relays, d.cfg.Leader),
		Routes:            len(d.node.Routes()),
		Parked:            d.relay.Parked(),
		Lost:              d.relay.Lost(),
		Reinjected:        d.relay.Reinjected(),
		Fenced:            d.relay.Fenced(),
		Bad:               d.relay.Bad(),
		DiscoveryAccepted: disc.Accepted,
		DiscoveryDropped:  disc.Dropped,
		Latency:           d.relay.Latency(),
	}
	s.IsLeader = s.Leader == d.cfg.NodeName
	for _, m := range v.Members {
		if m.State >= cluster.StateAlive && m.State <= cluster.StateLeft {
			s.Members[m.State]++
		}
	}
	return s
}
