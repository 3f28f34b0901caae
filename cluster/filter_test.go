package cluster

import "testing"

func TestFilter(t *testing.T) {
	const self = 7
	type step struct {
		a       Announcement
		want    DropReason
		newBoot bool
	}
	ann := func(node string, boot, seq uint64) Announcement {
		return Announcement{Node: node, Boot: boot, Seq: seq}
	}
	steps := []step{
		{ann("me", self, 1), DropSelf, false},
		{ann("b", 100, 1), DropNone, true},
		{ann("b", 100, 2), DropNone, false},
		{ann("b", 100, 2), DropReplay, false}, // byte-exact replay
		{ann("b", 100, 1), DropReplay, false}, // older
		{ann("b", 200, 1), DropNone, true},    // b restarted
		{ann("b", 100, 3), DropStaleBoot, false},
		{ann("b", 200, 2), DropNone, false},
		{ann("c", 100, 1), DropNone, true}, // boot ids are per node
	}
	f := NewFilter(self)
	for i, s := range steps {
		got, nb := f.Check(s.a)
		if got != s.want || nb != s.newBoot {
			t.Errorf("step %d %+v: got (%v, new boot %v), want (%v, %v)", i, s.a, got, nb, s.want, s.newBoot)
		}
	}
}

// The filter remembers only a bounded number of replaced boots; the
// oldest is forgotten first.
func TestFilterRetiresBoundedBoots(t *testing.T) {
	f := NewFilter(1)
	for boot := uint64(10); boot < 10+maxRetiredBoots+2; boot++ {
		if r, _ := f.Check(Announcement{Node: "b", Boot: boot, Seq: 1}); r != DropNone {
			t.Fatalf("boot %d: %v", boot, r)
		}
	}
	if r, _ := f.Check(Announcement{Node: "b", Boot: 11, Seq: 9}); r != DropStaleBoot {
		t.Errorf("recent retired boot: %v, want stale_boot", r)
	}
	if n := len(f.peers["b"].retired); n != maxRetiredBoots {
		t.Errorf("remembers %d retired boots, want %d", n, maxRetiredBoots)
	}
}
