package relay

import (
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
)

func TestInjectorWaitsForLeadershipQuorumAndSettle(t *testing.T) {
	cfg := Config{Node: "a", Batons: 3, MinNodes: 3, Settle: time.Second}
	t0 := time.Unix(0, 0)
	var j injector

	two := &cluster.View{Alive: []string{"a", "b"}, Relays: []string{"a", "b"}, Epoch: 1}
	if n := j.decide(two, cfg, false, t0); n != 0 {
		t.Fatalf("injected %d with 2 of 3 nodes", n)
	}
	three := &cluster.View{Alive: []string{"a", "b", "c"}, Relays: []string{"a", "b", "c"}, Epoch: 2}
	if n := j.decide(three, cfg, false, t0.Add(100*time.Millisecond)); n != 0 {
		t.Fatalf("injected %d before the membership settled", n)
	}
	if n := j.decide(three, cfg, false, t0.Add(1100*time.Millisecond)); n != 3 {
		t.Fatalf("settled quorum: injected %d, want 3", n)
	}
	if n := j.decide(three, cfg, false, t0.Add(time.Hour)); n != 0 {
		t.Errorf("injected a second time: %d", n)
	}
}

func TestInjectorFollowerAndRunningClusterDoNotInject(t *testing.T) {
	t0 := time.Unix(0, 0)
	later := t0.Add(time.Minute)
	v := &cluster.View{Alive: []string{"a", "b"}, Relays: []string{"a", "b"}, Epoch: 1}

	var follower injector
	follower.decide(v, Config{Node: "b", Batons: 1, MinNodes: 2}, false, t0)
	if n := follower.decide(v, Config{Node: "b", Batons: 1, MinNodes: 2}, false, later); n != 0 {
		t.Errorf("non-leader injected %d", n)
	}

	var takeover injector
	running := &cluster.View{Alive: []string{"a", "b"}, Relays: []string{"a", "b"}, Epoch: 1, Batons: true}
	takeover.decide(running, Config{Node: "a", Batons: 1, MinNodes: 2}, false, t0)
	if n := takeover.decide(running, Config{Node: "a", Batons: 1, MinNodes: 2}, false, later); n != 0 {
		t.Errorf("leader of a cluster with batons in flight injected %d more", n)
	}
}
