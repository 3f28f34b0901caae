package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// State is what this node believes about another member.
type State int

const (
	StateAlive   State = iota // a heartbeat arrived within SuspectAfter
	StateSuspect              // heartbeats missed for SuspectAfter; not yet given up
	StateDead                 // heartbeats missed for DeadAfter: a failure
	StateLeft                 // said goodbye: a clean stop, not a failure
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText makes states readable in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state written by MarshalText.
func (s *State) UnmarshalText(b []byte) error {
	for st := StateAlive; st <= StateLeft; st++ {
		if string(b) == st.String() {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("unknown member state %q", b)
}

// MembershipConfig holds the bounds of failure detection. With heartbeats
// sent every interval I (with up to 10% jitter), a member that stops
// sending is suspect after SuspectAfter and dead after DeadAfter, measured
// on this node's monotonic clock from the last heartbeat received, and
// noticed at the next Tick. Both should be several I so that one or two
// lost heartbeats (Wi-Fi) do not cause flapping.
type MembershipConfig struct {
	SuspectAfter time.Duration
	DeadAfter    time.Duration
	// ForgetAfter is how long a dead or left member stays listed before
	// it is dropped from the table altogether.
	ForgetAfter time.Duration
}

// Validate reports a configuration that cannot work.
func (c MembershipConfig) Validate() error {
	switch {
	case c.SuspectAfter <= 0:
		return fmt.Errorf("suspect timeout must be positive, got %v", c.SuspectAfter)
	case c.DeadAfter <= c.SuspectAfter:
		return fmt.Errorf("dead timeout (%v) must be longer than suspect timeout (%v)", c.DeadAfter, c.SuspectAfter)
	case c.ForgetAfter < 0:
		return fmt.Errorf("forget timeout must not be negative, got %v", c.ForgetAfter)
	}
	return nil
}

// Member is one row of the membership table.
type Member struct {
	Name      string    `json:"name"`
	State     State     `json:"state"`
	Boot      uint64    `json:"boot"`
	LastSeen  time.Time `json:"-"` // this node's clock, when the last heartbeat arrived
	Since     time.Time `json:"-"` // this node's clock, when State was entered
	Injected  bool      `json:"-"` // the member reports that batons are in flight
	Relay     bool      `json:"-"` // the member takes batons
	Hops      uint64    `json:"hops"`
	ClientURL string    `json:"-"` // where its NATS server takes client connections
}

// Transition records one change of a member's state, for logs and metrics.
type Transition struct {
	Name     string
	From, To State
	New      bool // the member was not in the table before
}

// Heartbeat is what membership learns from one heartbeat message.
type Heartbeat struct {
	Node      string
	Boot      uint64
	Leaving   bool
	Injected  bool
	Relay     bool
	Hops      uint64
	ClientURL string
}

// Membership is the pure membership state machine. It does no I/O and
// reads no clock: the caller passes the time of every event, so tests
// drive it with a fake clock and production passes time.Now() (whose
// monotonic reading makes wall-clock jumps after NTP sync harmless).
//
// The local node is always a member and always alive. Membership is not
// safe for concurrent use; one goroutine owns it.
type Membership struct {
	cfg     MembershipConfig
	self    string
	members map[string]*Member
}

// NewMembership returns a table that holds only self.
func NewMembership(self string, cfg MembershipConfig) *Membership {
	return &Membership{cfg: cfg, self: self, members: make(map[string]*Member)}
}

// Observe applies a heartbeat received at now. Heartbeats from self are
// ignored. It returns the transition it caused, if any.
func (m *Membership) Observe(hb Heartbeat, now time.Time) (Transition, bool) {
	if hb.Node == m.self {
		return Transition{}, false
	}

	mem, ok := m.members[hb.Node]
	if !ok {
		mem = &Member{Name: hb.Node, State: StateDead}
		m.members[hb.Node] = mem
	}
	from := mem.State
	mem.Boot, mem.LastSeen = hb.Boot, now
	mem.Injected, mem.Relay, mem.Hops, mem.ClientURL = hb.Injected, hb.Relay, hb.Hops, hb.ClientURL
	to := StateAlive
	if hb.Leaving {
		to = StateLeft
	}
	if ok && from == to {
		return Transition{}, false
	}
	mem.State, mem.Since = to, now
	return Transition{Name: hb.Node, From: from, To: to, New: !ok}, true
}

// Tick moves members whose heartbeats stopped to suspect and then dead,
// and forgets members dead or left for ForgetAfter. It returns the
// transitions in name order.
func (m *Membership) Tick(now time.Time) []Transition {
	var ts []Transition
	for _, name := range m.names() {
		mem := m.members[name]
		silent := now.Sub(mem.LastSeen)

		switch mem.State {
		case StateAlive, StateSuspect:
			to := mem.State
			if silent >= m.cfg.DeadAfter {
				to = StateDead
			} else if silent >= m.cfg.SuspectAfter {
				to = StateSuspect
			}
			if to != mem.State {
				ts = append(ts, Transition{Name: name, From: mem.State, To: to})
				mem.State, mem.Since = to, now
			}
		case StateDead, StateLeft:
			if m.cfg.ForgetAfter > 0 && now.Sub(mem.Since) >= m.cfg.ForgetAfter {
				delete(m.members, name)
			}
		}
	}
	return ts
}

// Members returns the table, self included, sorted by name. Self is
// reported alive with a zero LastSeen.
func (m *Membership) Members() []Member {
	out := make([]Member, 0, len(m.members)+1)
	out = append(out, Member{Name: m.self, State: StateAlive})
	for _, mem := range m.members {
		out = append(out, *mem)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Alive returns the names of members in state alive, self included, sorted.
func (m *Membership) Alive() []string {
	out := []string{m.self}
	for name, mem := range m.members {
		if mem.State == StateAlive {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (m *Membership) names() []string {
	names := make([]string, 0, len(m.members))
	for n := range m.members {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
