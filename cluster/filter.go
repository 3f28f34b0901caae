package cluster

// Filter drops authentic announcements that must not be acted on: our own
// (multicast loopback delivers them back to us), byte-exact replays, and
// packets from a boot of a node that has since restarted.
//
// A node's identity is its name; its boot id changes on every start. The
// filter remembers, per name, the current boot and the highest sequence
// number seen, plus a few boots that were replaced, so that an old
// announcement replayed after a restart cannot flip the peer back to its
// previous route URL. A restart is accepted at once: a new boot id is
// believed because the packet is authenticated, and only holders of the
// secret can make one.
//
// Filter is not safe for concurrent use; the discovery receive loop owns it.
type Filter struct {
	self  uint64
	peers map[string]*peerSeq
}

const (
	// maxRetiredBoots is how many replaced boots per node are remembered.
	maxRetiredBoots = 8
	// maxFilterPeers bounds the filter's memory. Only holders of the
	// secret can add names, so reaching it means a misconfigured fleet,
	// not an attack; the oldest-looking state is then simply forgotten.
	maxFilterPeers = 1024
)

type peerSeq struct {
	boot    uint64
	seq     uint64
	retired []uint64
}

// NewFilter returns a filter for a node whose own boot id is selfBoot.
func NewFilter(selfBoot uint64) *Filter {
	return &Filter{self: selfBoot, peers: make(map[string]*peerSeq)}
}

// Check decides whether a must be dropped, and if not, records it.
// It reports DropNone for an announcement to act on. newBoot is true when
// the announcement is the first seen from this boot of the node.
func (f *Filter) Check(a Announcement) (reason DropReason, newBoot bool) {
	if a.Boot == f.self {
		return DropSelf, false
	}

	p, ok := f.peers[a.Node]
	if !ok {
		if len(f.peers) >= maxFilterPeers {
			clear(f.peers)
		}
		f.peers[a.Node] = &peerSeq{boot: a.Boot, seq: a.Seq}
		return DropNone, true
	}

	switch {
	case a.Boot == p.boot:
		if a.Seq <= p.seq {
			return DropReplay, false
		}
		p.seq = a.Seq
		return DropNone, false
	case p.isRetired(a.Boot):
		return DropStaleBoot, false
	}

	// A new boot of a known node: it restarted.
	p.retired = append(p.retired, p.boot)
	if len(p.retired) > maxRetiredBoots {
		p.retired = p.retired[1:]
	}
	p.boot, p.seq = a.Boot, a.Seq
	return DropNone, true
}

func (p *peerSeq) isRetired(boot uint64) bool {
	for _, b := range p.retired {
		if b == boot {
			return true
		}
	}
	return false
}
