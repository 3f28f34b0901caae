package relay

import (
	"fmt"
	"math/rand/v2"
	"sort"
)

// Strategy is how a node picks the peer that gets the next baton.
type Strategy int

const (
	// Random picks a uniformly random alive peer for every baton.
	Random Strategy = iota
	// Shuffle sends to every alive peer once per round, in a fresh
	// random order each round, as the original Erlang relay did.
	Shuffle
	// Ring sends to the next alive peer in name order, wrapping around,
	// so a single baton visits every node in turn.
	Ring
)

// ParseStrategy reads a strategy name: random, shuffle or ring.
func ParseStrategy(s string) (Strategy, error) {
	switch s {
	case "random", "":
		return Random, nil
	case "shuffle":
		return Shuffle, nil
	case "ring":
		return Ring, nil
	}
	return 0, fmt.Errorf("unknown peer choice %q (want random, shuffle or ring)", s)
}

func (s Strategy) String() string {
	switch s {
	case Random:
		return "random"
	case Shuffle:
		return "shuffle"
	case Ring:
		return "ring"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// Chooser picks peers. It keeps the state a strategy needs (the current
// shuffled round) and does not allocate once warmed up. Not safe for
// concurrent use: each goroutine that passes batons has its own.
type Chooser struct {
	strategy Strategy
	self     string
	rng      *rand.Rand

	// Shuffle: the round being served, built from the peer list it
	// was drawn for; a new list starts a new round.
	round    []string
	roundFor []string
	pos      int
}

// NewChooser returns a chooser for the node self.
func NewChooser(s Strategy, self string, rng *rand.Rand) *Chooser {
	return &Chooser{strategy: s, self: self, rng: rng}
}

// Next returns the peer for the next baton. peers must be sorted, must
// not contain self, and must not be modified afterwards (View.Peers
// qualifies). ok is false when there is no peer to send to.
func (c *Chooser) Next(peers []string) (peer string, ok bool) {
	if len(peers) == 0 {
		return "", false
	}
	switch c.strategy {
	case Shuffle:
		return c.nextShuffled(peers), true
	case Ring:
		i := sort.SearchStrings(peers, c.self)
		if i < len(peers) && peers[i] == c.self {
			i++ // tolerate a list that contains self
		}
		return peers[i%len(peers)], true
	}
	return peers[c.rng.IntN(len(peers))], true
}

func (c *Chooser) nextShuffled(peers []string) string {
	if c.pos >= len(c.round) || !sameList(c.roundFor, peers) {
		c.roundFor = peers
		c.round = append(c.round[:0], peers...)
		c.rng.Shuffle(len(c.round), func(i, j int) { c.round[i], c.round[j] = c.round[j], c.round[i] })
		c.pos = 0
	}
	p := c.round[c.pos]
	c.pos++
	return p
}

// sameList reports whether a and b are the same immutable snapshot. Views
// are never modified after publication, so identity is enough and costs
// nothing per hop.
func sameList(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Leader returns the node that injects batons: preferred if it is alive,
// otherwise the lowest alive name. alive must be sorted. It returns ""
// when alive is empty.
func Leader(alive []string, preferred string) string {
	if preferred != "" {
		if i := sort.SearchStrings(alive, preferred); i < len(alive) && alive[i] == preferred {
			return preferred
		}
	}
	if len(alive) == 0 {
		return ""
	}
	return alive[0]
}
