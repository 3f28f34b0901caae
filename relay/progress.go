package relay

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Loss recovery.
//
// A baton is lost when the node holding it dies, or when it is sent to a
// peer that dies before passing it on. Every node records, per baton, the
// highest (epoch, counter) it has seen, and reports what changed on
// baton.progress.<node> every heartbeat interval. The leader merges the
// reports; a baton whose position has not moved for the loss timeout is
// lost, and the leader injects it again with the next epoch, continuing
// from the highest counter seen, and announces the new epoch on
// baton.control. A copy of the old epoch that was only late, not lost,
// dies at the first node that knows the newer epoch (fencing), so two
// copies of a baton live at most until the announcement has reached
// every node, and no counter ever goes backwards.

// Position is a baton's epoch and counter packed into one word, epoch in
// the top 16 bits: comparing two positions as integers orders them by
// epoch, then counter, and one atomic word holds a consistent pair.
type Position uint64

const (
	epochShift = 48
	// MaxCounter is the largest counter a position holds: at a million
	// hops a second, one baton needs nine years to reach it.
	MaxCounter = 1<<epochShift - 1
	// MaxEpoch is the largest epoch: the number of times one baton can
	// be injected again.
	MaxEpoch = 1<<(64-epochShift) - 1
)

// Pos packs an epoch and a counter.
func Pos(epoch uint16, counter uint64) Position {
	return Position(uint64(epoch)<<epochShift | counter&MaxCounter)
}

// Epoch returns the position's epoch.
func (p Position) Epoch() uint16 { return uint16(p >> epochShift) }

// Counter returns the position's counter.
func (p Position) Counter() uint64 { return uint64(p) & MaxCounter }

func (p Position) String() string { return fmt.Sprintf("%d@%d", p.Counter(), p.Epoch()) }

// Table holds, per baton id, the highest position this node has seen. The
// serve goroutine writes it, and the reporting and control goroutines
// read it, without locks. Ids at or above its size are not tracked.
type Table struct {
	pos []atomic.Uint64
}

// NewTable returns a table for ids 0 to n-1.
func NewTable(n int) *Table { return &Table{pos: make([]atomic.Uint64, n)} }

// Len returns the number of ids tracked.
func (t *Table) Len() int { return len(t.pos) }

// Get returns the highest position seen for id, or 0.
func (t *Table) Get(id uint32) Position {
	if int(id) >= len(t.pos) {
		return 0
	}
	return Position(t.pos[id].Load())
}

// Raise records p for id if it is higher than what is known, and returns
// the position known afterwards.
func (t *Table) Raise(id uint32, p Position) Position {
	if int(id) >= len(t.pos) {
		return p
	}
	slot := &t.pos[id]
	for {
		old := slot.Load()
		if uint64(p) <= old {
			return Position(old)
		}
		if slot.CompareAndSwap(old, uint64(p)) {
			return p
		}
	}
}

// AppendReport appends the entries that changed since last (a copy the
// caller keeps between reports), or with all every known entry, as
// "id:epoch:counter" separated by spaces, and updates last.
func (t *Table) AppendReport(dst []byte, last []Position, all bool) []byte {
	for id := range t.pos {
		p := Position(t.pos[id].Load())
		if p == 0 || (p == last[id] && !all) {
			continue
		}
		last[id] = p
		dst = AppendEntry(dst, uint32(id), p)
	}
	return dst
}

// AppendEntry appends one "id:epoch:counter" entry of a progress report
// or an epoch announcement, after a space unless dst is empty.
func AppendEntry(dst []byte, id uint32, p Position) []byte {
	if len(dst) > 0 {
		dst = append(dst, ' ')
	}
	dst = strconv.AppendUint(dst, uint64(id), 10)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, uint64(p.Epoch()), 10)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, p.Counter(), 10)
}

// ParseReport calls fn for every entry of a progress report. It stops at
// the first malformed entry and returns an error naming it.
func ParseReport(b []byte, fn func(id uint32, p Position)) error {
	for len(b) > 0 {
		end := 0
		for end < len(b) && b[end] != ' ' {
			end++
		}
		entry := b[:end]
		if end < len(b) {
			end++
		}
		b = b[end:]

		var f [3]uint64
		n, rest := 0, entry
		for {
			i := 0
			for i < len(rest) && rest[i] != ':' {
				i++
			}
			if n == len(f) {
				n++ // a fourth field
				break
			}
			v, err := ParseCounter(rest[:i])
			if err != nil {
				return fmt.Errorf("progress entry %q: %w", entry, err)
			}
			f[n] = v
			n++
			if i == len(rest) {
				break
			}
			rest = rest[i+1:]
		}
		if n != 3 || f[0] > MaxBatonID || f[1] > MaxEpoch || f[2] > MaxCounter {
			return fmt.Errorf("progress entry %q: want id:epoch:counter", entry)
		}
		fn(uint32(f[0]), Pos(uint16(f[1]), f[2]))
	}
	return nil
}

// LossDetector is the leader's view of every baton's progress. It is
// pure: positions and the time are passed in. Not safe for concurrent
// use.
type LossDetector struct {
	timeout time.Duration
	batons  []tracked
}

type tracked struct {
	pos   Position
	moved time.Time // when pos last rose
}

// NewLossDetector tracks batons 0 to n-1, each considered to have moved at
// now: a node that starts watching (a new leader) gives every baton a
// whole timeout to show up before calling it lost.
func NewLossDetector(n int, timeout time.Duration, now time.Time) *LossDetector {
	d := &LossDetector{timeout: timeout, batons: make([]tracked, n)}
	for i := range d.batons {
		d.batons[i].moved = now
	}
	return d
}

// Observe records that baton id was seen at position p.
func (d *LossDetector) Observe(id uint32, p Position, now time.Time) {
	if int(id) >= len(d.batons) {
		return
	}
	if b := &d.batons[id]; p > b.pos {
		b.pos, b.moved = p, now
	}
}

// Moving returns how many batons have moved within the timeout.
func (d *LossDetector) Moving(now time.Time) int {
	n := 0
	for _, b := range d.batons {
		if b.pos != 0 && now.Sub(b.moved) < d.timeout {
			n++
		}
	}
	return n
}

// Recovery is a baton to inject again.
type Recovery struct {
	ID   uint32
	Last Position // highest position seen
	Next Position // where it starts again: next epoch, next counter
}

// Lost returns the batons that have not moved for the timeout, each with
// the position to inject it at, and records that position as their own
// (so each is recovered once per timeout, not at every call).
func (d *LossDetector) Lost(now time.Time) []Recovery {
	var out []Recovery
	for id := range d.batons {
		b := &d.batons[id]
		if now.Sub(b.moved) < d.timeout || b.pos.Epoch() == MaxEpoch {
			continue
		}
		next := Pos(b.pos.Epoch()+1, b.pos.Counter()+1)
		out = append(out, Recovery{ID: uint32(id), Last: b.pos, Next: next})
		b.pos, b.moved = next, now
	}
	return out
}

// epochTable holds, per baton id, the highest epoch established on this
// node, without locks. Ids at or above its size are not tracked and
// count as epoch 0.
type epochTable struct {
	e []atomic.Uint32
}

func newEpochTable(n int) epochTable { return epochTable{e: make([]atomic.Uint32, n)} }

func (t epochTable) get(id uint32) uint32 {
	if int(id) >= len(t.e) {
		return 0
	}
	return t.e[id].Load()
}

// raise records epoch for id if it is higher, and reports whether it was.
func (t epochTable) raise(id uint32, epoch uint32) bool {
	if int(id) >= len(t.e) {
		return false
	}
	slot := &t.e[id]
	for {
		old := slot.Load()
		if epoch <= old {
			return false
		}
		if slot.CompareAndSwap(old, epoch) {
			return true
		}
	}
}
