package cluster

import (
	"slices"
	"testing"
	"time"
)

var testPlan = RoutePlanConfig{HealAfter: 3 * time.Second, Grace: 30 * time.Second}

func heard(node, url string) Announcement {
	return Announcement{Node: node, Boot: 1, RouteURL: url}
}

func TestPlannerSeedsLowestPeer(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := NewRoutePlanner("c", testPlan)
	p.Heard(heard("d", "r://d"), t0)
	urls, changed := p.Plan(nil, t0)
	if len(urls) != 0 || changed {
		t.Fatalf("only a higher peer heard: routes %v, want none (it dials us)", urls)
	}

	p.Heard(heard("b", "r://b"), t0)
	p.Heard(heard("a", "r://a"), t0)
	urls, changed = p.Plan([]string{"d"}, t0)
	if !changed || !slices.Equal(urls, []string{"r://a"}) {
		t.Fatalf("routes %v (changed %v), want the lowest peer a", urls, changed)
	}

	// Gossip connected us to everyone: the seed route stays, nothing new.
	urls, changed = p.Plan([]string{"a", "b", "d"}, t0.Add(5*time.Second))
	if changed || !slices.Equal(urls, []string{"r://a"}) {
		t.Errorf("after gossip: routes %v (changed %v)", urls, changed)
	}
}

func TestPlannerLowestNodeWaits(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := NewRoutePlanner("a", testPlan)
	p.Heard(heard("b", "r://b"), t0)
	if urls, _ := p.Plan(nil, t0.Add(time.Second)); len(urls) != 0 {
		t.Errorf("lowest node dialled %v before HealAfter", urls)
	}
	// Nobody dialled it within HealAfter: it heals by dialling.
	if urls, _ := p.Plan(nil, t0.Add(3*time.Second)); !slices.Equal(urls, []string{"r://b"}) {
		t.Errorf("after HealAfter: routes %v, want r://b", urls)
	}
}

func TestPlannerHealsMissingPeer(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := NewRoutePlanner("b", testPlan)
	p.Heard(heard("a", "r://a"), t0)
	p.Heard(heard("c", "r://c"), t0)
	p.Plan([]string{"a"}, t0) // c not reached by gossip

	if urls, _ := p.Plan([]string{"a"}, t0.Add(2999*time.Millisecond)); slices.Contains(urls, "r://c") {
		t.Errorf("dialled c before HealAfter: %v", urls)
	}
	if urls, _ := p.Plan([]string{"a"}, t0.Add(3*time.Second)); !slices.Equal(urls, []string{"r://c"}) {
		t.Errorf("after HealAfter: %v, want only c (a is connected)", urls)
	}
}

func TestPlannerFollowsRestartedPeer(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := NewRoutePlanner("b", testPlan)
	p.Heard(heard("a", "r://a:1"), t0)
	p.Plan(nil, t0)
	if !p.Heard(heard("a", "r://a:2"), t0.Add(time.Second)) {
		t.Error("a new route URL was not reported as a change")
	}
	urls, changed := p.Plan(nil, t0.Add(time.Second))
	if !changed || !slices.Equal(urls, []string{"r://a:2"}) {
		t.Errorf("routes %v (changed %v), want the new URL only", urls, changed)
	}
}

// A node removed for good is dialled until Grace has passed since it was
// last heard or connected, then never again; when it comes back it is
// routed to again.
func TestPlannerDropsGonePeerAfterGrace(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := NewRoutePlanner("b", testPlan)
	p.Heard(heard("a", "r://a"), t0)
	p.Plan([]string{"a"}, t0.Add(time.Second)) // connected until t0+1s

	if urls, _ := p.Plan(nil, t0.Add(30*time.Second)); !slices.Equal(urls, []string{"r://a"}) {
		t.Errorf("route removed within grace: %v", urls)
	}
	urls, changed := p.Plan(nil, t0.Add(31*time.Second))
	if !changed || len(urls) != 0 {
		t.Errorf("after grace: routes %v (changed %v), want none", urls, changed)
	}
	if len(p.Known()) != 0 {
		t.Errorf("still knows %v", p.Known())
	}

	p.Heard(heard("a", "r://a"), t0.Add(60*time.Second))
	if urls, _ := p.Plan(nil, t0.Add(60*time.Second)); !slices.Equal(urls, []string{"r://a"}) {
		t.Errorf("returning peer not routed: %v", urls)
	}
}

// A peer that announces it is leaving keeps its route while it is still
// connected (it hands on batons and says goodbye over it), and loses it
// as soon as it disconnects, so nobody redials it.
func TestPlannerLeavingPeerDroppedOnceDisconnected(t *testing.T) {
	t0 := time.Unix(0, 0)
	p := NewRoutePlanner("b", testPlan)
	p.Heard(heard("a", "r://a"), t0)
	p.Plan(nil, t0)
	if !p.Heard(Announcement{Node: "a", Boot: 1, RouteURL: "r://a", Leaving: true}, t0) {
		t.Error("a leave was not reported as a change")
	}
	if urls, changed := p.Plan([]string{"a"}, t0); changed || !slices.Equal(urls, []string{"r://a"}) {
		t.Errorf("still connected: routes %v (changed %v), want the route kept", urls, changed)
	}
	if urls, changed := p.Plan(nil, t0.Add(time.Second)); !changed || len(urls) != 0 {
		t.Errorf("after it disconnected: routes %v (changed %v), want none", urls, changed)
	}
	if urls, _ := p.Plan(nil, t0.Add(time.Minute)); len(urls) != 0 {
		t.Errorf("redialled a node that left: %v", urls)
	}
}
