package relay

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func seeded() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

func TestChooserNoPeers(t *testing.T) {
	for _, s := range []Strategy{Random, Shuffle, Ring} {
		if p, ok := NewChooser(s, "a", seeded()).Next(nil); ok {
			t.Errorf("%v chose %q from no peers", s, p)
		}
	}
}

// Random never picks self (peers exclude it) and spreads evenly.
func TestChooserRandomIsUniform(t *testing.T) {
	peers := []string{"b", "c", "d"}
	c := NewChooser(Random, "a", seeded())
	count := map[string]int{}
	const n = 30000
	for range n {
		p, _ := c.Next(peers)
		count[p]++
	}
	for _, p := range peers {
		if got := count[p]; got < n/3-n/30 || got > n/3+n/30 {
			t.Errorf("%s chosen %d of %d times, want about %d", p, got, n, n/3)
		}
	}
	if len(count) != len(peers) {
		t.Errorf("chose outside the peers: %v", count)
	}
}

// Shuffle serves every peer exactly once per round, and the rounds are
// not all in the same order.
func TestChooserShuffleRounds(t *testing.T) {
	peers := []string{"b", "c", "d", "e"}
	c := NewChooser(Shuffle, "a", seeded())
	orders := map[string]bool{}
	for round := range 20 {
		var got []string
		for range peers {
			p, _ := c.Next(peers)
			got = append(got, p)
		}
		orders[strings.Join(got, ",")] = true
		sorted := slices.Sorted(slices.Values(got))
		if !slices.Equal(sorted, peers) {
			t.Fatalf("round %d served %v, want each peer once", round, got)
		}
	}
	if len(orders) < 2 {
		t.Error("every round started the same way; rounds are not reshuffled")
	}
}

// A change of membership starts a new round over the new peer list.
func TestChooserShuffleFollowsMembership(t *testing.T) {
	c := NewChooser(Shuffle, "a", seeded())
	before := []string{"b", "c", "d"}
	c.Next(before)
	after := []string{"c", "d"}
	for range 10 {
		if p, _ := c.Next(after); p == "b" {
			t.Fatal("sent to a peer that is no longer alive")
		}
	}
}

func TestChooserRing(t *testing.T) {
	peers := []string{"a", "c", "d"}
	tests := []struct{ self, want string }{
		{"b", "c"}, {"c", "d"}, {"d", "a"}, {"e", "a"}, {"0", "a"},
	}
	for _, tt := range tests {
		got, _ := NewChooser(Ring, tt.self, seeded()).Next(peers)
		if got != tt.want {
			t.Errorf("ring from %s: %s, want %s", tt.self, got, tt.want)
		}
	}
}

func TestChooserNextNoAllocs(t *testing.T) {
	peers := []string{"b", "c", "d"}
	for _, s := range []Strategy{Random, Shuffle, Ring} {
		c := NewChooser(s, "a", seeded())
		c.Next(peers)
		if allocs := testing.AllocsPerRun(1000, func() { c.Next(peers) }); allocs != 0 {
			t.Errorf("%v: %v allocations per choice, want 0", s, allocs)
		}
	}
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []Strategy{Random, Shuffle, Ring} {
		got, err := ParseStrategy(s.String())
		if err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseStrategy("roundrobin"); err == nil {
		t.Error("unknown strategy accepted")
	}
}

func TestLeader(t *testing.T) {
	tests := []struct {
		alive     []string
		preferred string
		want      string
	}{
		{[]string{"a", "b"}, "", "a"},
		{[]string{"a", "b"}, "b", "b"},
		{[]string{"a", "b"}, "z", "a"}, // preferred not alive
		{nil, "", ""},
	}
	for _, tt := range tests {
		if got := Leader(tt.alive, tt.preferred); got != tt.want {
			t.Errorf("Leader(%v, %q) = %q, want %q", tt.alive, tt.preferred, got, tt.want)
		}
	}
}
