// Package hist is a fixed-size, lock-free histogram of durations, cheap
// enough to record on every hop: one atomic add, no allocation.
//
// Buckets are log-linear: each power of two of nanoseconds is split into
// 8 equal sub-buckets, so any recorded value is placed within 12.5% of
// its true value, from 1 ns up to about 4.6 s (larger values land in the
// last bucket). Snapshots are plain counts that can be subtracted (the
// change over an interval) and merged (across nodes) before asking for
// quantiles.
package hist

import (
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits  = 3
	subCount = 1 << subBits
	// majors covers 2^0 .. 2^32 ns (about 4.3 s).
	majors = 33
	// NumBuckets is the length of a Snapshot.
	NumBuckets = majors * subCount
)

// Histogram counts durations. The zero value is ready to use and safe for
// concurrent use.
type Histogram struct {
	counts [NumBuckets]atomic.Uint64
}

// Snapshot is a copy of the counts.
type Snapshot [NumBuckets]uint64

// Record adds one duration. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucket(d)].Add(1)
}

// Snapshot copies the current counts.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		s[i] = h.counts[i].Load()
	}
	return s
}

func bucket(d time.Duration) int {
	if d < subCount {
		if d < 0 {
			return 0
		}
		return int(d)
	}
	v := uint64(d)
	major := bits.Len64(v) - 1 - subBits // v >= 8, so major >= 0
	sub := int(v>>uint(major)) & (subCount - 1)
	i := (major+1)*subCount + sub
	if i >= NumBuckets {
		return NumBuckets - 1
	}
	return i
}

// lower returns the smallest duration that falls in bucket i.
func lower(i int) time.Duration {
	if i < subCount {
		return time.Duration(i)
	}
	major := i/subCount - 1
	sub := i % subCount
	return time.Duration((uint64(subCount) + uint64(sub)) << uint(major))
}

// Sub returns the counts added between old and s (s minus old).
func (s Snapshot) Sub(old Snapshot) Snapshot {
	var out Snapshot
	for i := range s {
		out[i] = s[i] - old[i]
	}
	return out
}

// Add returns the sum of s and o.
func (s Snapshot) Add(o Snapshot) Snapshot {
	var out Snapshot
	for i := range s {
		out[i] = s[i] + o[i]
	}
	return out
}

// Count returns the number of recorded values.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0 < q <= 1), as the middle of the
// bucket that holds it, or 0 for an empty snapshot.
func (s Snapshot) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range s {
		seen += c
		if seen >= rank {
			if i+1 >= NumBuckets {
				return lower(i)
			}
			return (lower(i) + lower(i+1)) / 2
		}
	}
	return lower(NumBuckets - 1)
}

// Sparse returns the non-empty buckets as index → count, a compact form
// for JSON.
func (s Snapshot) Sparse() map[int]uint64 {
	m := make(map[int]uint64)
	for i, c := range s {
		if c > 0 {
			m[i] = c
		}
	}
	return m
}

// FromSparse rebuilds a snapshot from Sparse's form; indexes out of range
// are ignored.
func FromSparse(m map[int]uint64) Snapshot {
	var s Snapshot
	for i, c := range m {
		if i >= 0 && i < NumBuckets {
			s[i] = c
		}
	}
	return s
}
