package cluster

import (
	"maps"
	"slices"
	"time"
)

// RoutePlanConfig bounds how the route planner reacts.
type RoutePlanConfig struct {
	// HealAfter is how long a heard peer may stay unconnected before this
	// node dials it directly instead of waiting for NATS gossip.
	HealAfter time.Duration
	// Grace is how long a peer may go unheard (no announcement) and
	// unconnected before its explicit route is removed, so that a node
	// removed for good is not dialled forever.
	Grace time.Duration
}

// RoutePlanner decides which explicit NATS routes this node configures.
// It is pure: announcements, the set of connected peers and the time are
// passed in, and the output is the desired route list.
//
// The strategy follows what was measured for embedded NATS: every node
// seeds one route, to the lowest-named peer it has heard, and NATS route
// gossip completes the full mesh. Because all nodes pick the same seed,
// simultaneous starts produce few duplicate routes. The lowest-named node
// itself waits to be dialled. Anything the
// seed does not fix within HealAfter (a peer that gossip did not reach, a
// partition that healed, a seed that is unreachable) is fixed by dialling
// the missing peer directly.
//
// Explicit routes are redialled by NATS forever, so the planner removes
// the route of a peer that has been neither heard nor connected for
// Grace, and as soon as a peer that announced it is leaving has
// disconnected. (Not at the announcement itself: the leaver still hands
// on batons and says goodbye over that route during its leave grace.)
type RoutePlanner struct {
	cfg      RoutePlanConfig
	self     string
	peers    map[string]*heardPeer
	explicit map[string]string // peer name -> route URL configured now
}

type heardPeer struct {
	url          string
	lastHeard    time.Time
	lastLinked   time.Time // last time the peer was seen connected
	missingSince time.Time // zero while connected
	leaving      bool      // announced a clean stop; forget once disconnected
}

// NewRoutePlanner returns a planner for the node named self.
func NewRoutePlanner(self string, cfg RoutePlanConfig) *RoutePlanner {
	return &RoutePlanner{
		cfg:      cfg,
		self:     self,
		peers:    make(map[string]*heardPeer),
		explicit: make(map[string]string),
	}
}

// Heard records an accepted announcement received at now. It reports
// whether the peer is new or changed its route URL, which deserves an
// immediate Plan rather than waiting for the next tick.
func (p *RoutePlanner) Heard(a Announcement, now time.Time) bool {
	if a.Node == p.self {
		return false
	}

	hp, ok := p.peers[a.Node]
	if !ok {
		if a.Leaving {
			return false // never routed to; nothing to undo
		}
		p.peers[a.Node] = &heardPeer{url: a.RouteURL, lastHeard: now, missingSince: now}
		return true
	}
	changed := hp.url != a.RouteURL || hp.leaving != a.Leaving
	hp.url, hp.lastHeard, hp.leaving = a.RouteURL, now, a.Leaving
	return changed
}

// Plan returns the explicit routes wanted now, as a sorted list of route
// URLs, and whether it differs from the previous plan. connected holds the
// names of the peers this node has a route to at this moment.
func (p *RoutePlanner) Plan(connected []string, now time.Time) ([]string, bool) {
	up := make(map[string]bool, len(connected))
	for _, n := range connected {
		up[n] = true
	}

	p.trackLinks(up, now)
	want := p.wanted(up, now)

	changed := !maps.Equal(want, p.explicit)
	p.explicit = want
	urls := slices.Sorted(maps.Values(want))
	return urls, changed
}

// trackLinks updates connection times and forgets peers that have been
// silent and unconnected for Grace.
func (p *RoutePlanner) trackLinks(up map[string]bool, now time.Time) {
	for name, hp := range p.peers {
		if up[name] {
			hp.lastLinked, hp.missingSince = now, time.Time{}
			continue
		}
		if hp.leaving {
			delete(p.peers, name) // it left and is gone: do not redial
			continue
		}
		if hp.missingSince.IsZero() {
			hp.missingSince = now
		}
		last := hp.lastHeard
		if hp.lastLinked.After(last) {
			last = hp.lastLinked
		}
		if now.Sub(last) >= p.cfg.Grace {
			delete(p.peers, name)
		}
	}
}

func (p *RoutePlanner) wanted(up map[string]bool, now time.Time) map[string]string {
	want := make(map[string]string)

	// Keep the routes already configured while their peer is known, with
	// the URL it announces now (it may have restarted on a new port).
	for name := range p.explicit {
		if hp, ok := p.peers[name]; ok {
			want[name] = hp.url
		}
	}

	// Heal: dial any peer that has stayed unconnected too long.
	for name, hp := range p.peers {
		if !up[name] && !hp.leaving && now.Sub(hp.missingSince) >= p.cfg.HealAfter {
			want[name] = hp.url
		}
	}

	// Seed: keep a route to the lowest-named node known, unless that is
	// this node. All nodes pick the same seed, so the mesh grows around
	// one node even when nodes first hear each other in different orders
	// (seeding only while unconnected let early pairs form separate
	// islands that waited HealAfter to merge).
	if len(p.peers) > 0 {
		lowest := slices.Min(slices.Collect(maps.Keys(p.peers)))
		if lowest < p.self && !up[lowest] {
			want[lowest] = p.peers[lowest].url
		}
	}
	return want
}

// Known returns the names of the peers heard within Grace, sorted.
func (p *RoutePlanner) Known() []string {
	return slices.Sorted(maps.Keys(p.peers))
}
