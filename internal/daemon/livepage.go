package daemon

import (
	"net/http"
	"time"

	"github.com/baton-relay/baton/internal/live"
	"github.com/baton-relay/baton/relay"
)

// The live page's history: one sample a second for ten minutes, about
// 600 samples of a few members each, so well under a megabyte.
const (
	historyInterval = time.Second
	historyWindow   = 10 * time.Minute
)

// startHistory starts the recorder behind GET /history. It needs the
// node and the relay; Shutdown and Close stop it.
func (d *Daemon) startHistory() {
	d.history = live.StartRecorder(live.RecorderConfig{
		Node:     d.cfg.NodeName,
		Interval: historyInterval,
		Window:   historyWindow,
		Source:   d.historySample,
	})
}

// historySample reads what this node knows now: every member's hop count
// (from its heartbeats; this node's own from the relay), the leader, the
// loss counters and the epoch of every baton.
func (d *Daemon) historySample(now time.Time) live.Sample {
	v := d.node.View()
	s := live.Sample{
		At:         now,
		Leader:     relay.Leader(v.Relays, d.cfg.Leader),
		Lost:       d.relay.Lost(),
		Reinjected: d.relay.Reinjected(),
		Epochs:     make([]uint16, d.cfg.Batons),
	}
	for id := range s.Epochs {
		s.Epochs[id] = d.relay.Position(uint32(id)).Epoch()
	}
	for _, m := range v.Members {
		ns := live.NodeSample{Name: m.Name, State: m.State.String(), Hops: m.Hops, HopsAt: m.LastSeen}
		if m.Name == d.cfg.NodeName {
			ns.Hops, ns.HopsAt = d.relay.Hops(), now
		}
		s.Nodes = append(s.Nodes, ns)
	}
	return s
}

// mountLive adds the live page ("/", "/live/...") and GET /history.
func (d *Daemon) mountLive(mux *http.ServeMux) {
	page := live.Page()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /live/", page)
	if d.history != nil {
		mux.Handle("GET /history", d.history)
	}
}

// stopHistory stops the recorder, if it was started.
func (d *Daemon) stopHistory() {
	if d.history != nil {
		d.history.Stop()
	}
}
