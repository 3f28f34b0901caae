package cluster

import (
	"slices"
	"testing"
	"time"
)

var testMembership = MembershipConfig{
	SuspectAfter: 1500 * time.Millisecond,
	DeadAfter:    3 * time.Second,
	ForgetAfter:  10 * time.Second,
}

func stateOf(m *Membership, name string) (State, bool) {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem.State, true
		}
	}
	return 0, false
}

// A member's life on a clock the test controls: heard, silent long enough
// to be suspect, heard again, silent until dead, forgotten.
func TestMembershipFailureDetection(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := NewMembership("a", testMembership)

	tr, ok := m.Observe(Heartbeat{Node: "b", Boot: 1}, at(0))
	if !ok || tr.To != StateAlive || !tr.New {
		t.Fatalf("first heartbeat: %+v %v, want new alive", tr, ok)
	}
	if got := m.Alive(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("alive %v", got)
	}
	if _, ok := m.Observe(Heartbeat{Node: "b", Boot: 1}, at(500)); ok {
		t.Error("a repeated heartbeat reported a transition")
	}

	if ts := m.Tick(at(1999)); len(ts) != 0 {
		t.Errorf("transition before the suspect timeout: %+v", ts)
	}
	ts := m.Tick(at(2000))
	if len(ts) != 1 || ts[0].To != StateSuspect {
		t.Fatalf("at suspect timeout: %+v", ts)
	}
	if got := m.Alive(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("suspect member counted alive: %v", got)
	}

	if tr, ok := m.Observe(Heartbeat{Node: "b", Boot: 1}, at(2100)); !ok || tr.From != StateSuspect || tr.To != StateAlive {
		t.Errorf("heartbeat from suspect: %+v %v", tr, ok)
	}

	m.Tick(at(3600))
	ts = m.Tick(at(5100))
	if len(ts) != 1 || ts[0].To != StateDead {
		t.Fatalf("at dead timeout: %+v", ts)
	}
	m.Tick(at(15099))
	if _, ok := stateOf(m, "b"); !ok {
		t.Error("dead member forgotten before ForgetAfter")
	}
	m.Tick(at(15100))
	if _, ok := stateOf(m, "b"); ok {
		t.Error("dead member not forgotten after ForgetAfter")
	}
}

func TestMembershipLeaveIsNotFailure(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := NewMembership("a", testMembership)
	m.Observe(Heartbeat{Node: "b", Boot: 1}, t0)

	tr, ok := m.Observe(Heartbeat{Node: "b", Boot: 1, Leaving: true}, t0.Add(time.Second))
	if !ok || tr.To != StateLeft {
		t.Fatalf("leave: %+v %v", tr, ok)
	}
	if ts := m.Tick(t0.Add(time.Minute / 6)); len(ts) != 0 {
		t.Errorf("a member that left went on to %+v", ts)
	}
	if s, _ := stateOf(m, "b"); s != StateLeft {
		t.Errorf("state %v, want left", s)
	}

	// Restarted: a new boot brings it back.
	tr, ok = m.Observe(Heartbeat{Node: "b", Boot: 2}, t0.Add(2*time.Second))
	if !ok || tr.To != StateAlive {
		t.Errorf("rejoin after leave: %+v %v", tr, ok)
	}
}

func TestMembershipIgnoresSelf(t *testing.T) {
	m := NewMembership("a", testMembership)
	if _, ok := m.Observe(Heartbeat{Node: "a", Leaving: true}, time.Unix(0, 0)); ok {
		t.Error("own heartbeat caused a transition")
	}
	if got := m.Alive(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("alive %v, want only self", got)
	}
}

func TestMembershipConfigValidate(t *testing.T) {
	if err := testMembership.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
	for _, c := range []MembershipConfig{
		{SuspectAfter: 0, DeadAfter: time.Second},
		{SuspectAfter: time.Second, DeadAfter: time.Second},
		{SuspectAfter: time.Second, DeadAfter: 2 * time.Second, ForgetAfter: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
