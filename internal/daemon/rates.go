package daemon

import (
	"sync"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/hist"
)

// RateInterval is the interval /status rates and recent latencies are
// measured over: one second, so hops/s means what it says. A member
// whose heartbeats come less often than that gets its rate over the
// span between two of its heartbeats instead.
const RateInterval = time.Second

// ratePoint is one sample of a monotonic counter.
type ratePoint struct {
	at time.Time // this node's clock (monotonic reading)
	n  uint64
}

// rateSeries turns samples of one counter into a rate over the last
// window. It keeps the newest sample and the newest one that is at least
// window older, so the rate covers one window, or more when samples are
// sparse. Samples taken at the same time as the newest one are ignored (a
// member's heartbeat that was not renewed since the last look); a
// counter that goes back, or a new boot id, starts the series again (a
// restarted node counts from zero).
type rateSeries struct {
	boot uint64
	pts  []ratePoint // oldest first
}

func (s *rateSeries) add(p ratePoint, boot uint64, window time.Duration) {
	if n := len(s.pts); n > 0 {
		last := s.pts[n-1]
		if boot != s.boot || p.n < last.n {
			s.pts = s.pts[:0]
		} else if !p.at.After(last.at) {
			return
		}
	}
	s.boot = boot
	s.pts = append(s.pts, p)
	for len(s.pts) > 2 && !s.pts[1].at.After(p.at.Add(-window)) {
		s.pts = s.pts[1:]
	}
}

// rate returns the counter's increase per second over the span the
// series covers, and that span; ok is false with fewer than two samples.
func (s *rateSeries) rate() (perSec float64, span time.Duration, ok bool) {
	if len(s.pts) < 2 {
		return 0, 0, false
	}
	first, last := s.pts[0], s.pts[len(s.pts)-1]
	span = last.at.Sub(first.at)
	return float64(last.n-first.n) / span.Seconds(), span, true
}

// latencyPoint is one sample of this node's latency histogram.
type latencyPoint struct {
	at time.Time
	h  hist.Snapshot
}

// rateTracker holds the rates /status reports: this node's hop rate, each
// member's (from the hop counts in its heartbeats, timed by their arrival
// here) and this node's latency over the last interval. A sampler calls
// sample every RateInterval; Status reads. Safe for concurrent use.
type rateTracker struct {
	window time.Duration

	mu      sync.Mutex
	self    rateSeries
	members map[string]*rateSeries
	lat     []latencyPoint // oldest first, like rateSeries.pts
}

func newRateTracker(window time.Duration) *rateTracker {
	return &rateTracker{window: window, members: make(map[string]*rateSeries)}
}

// sample records this node's hop count and latency histogram at now,
// and each member's last reported hops at the time its heartbeat arrived.
// Members no longer listed are forgotten.
func (t *rateTracker) sample(now time.Time, self string, hops uint64, lat hist.Snapshot, members []cluster.Member) {
	t.mu.Lock()
	defer t.mu.Unlock()

	t.self.add(ratePoint{at: now, n: hops}, 0, t.window)
	t.lat = append(t.lat, latencyPoint{at: now, h: lat})
	for len(t.lat) > 2 && !t.lat[1].at.After(now.Add(-t.window)) {
		t.lat = t.lat[1:]
	}

	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if m.Name == self || m.LastSeen.IsZero() {
			continue
		}
		seen[m.Name] = true
		s := t.members[m.Name]
		if s == nil {
			s = new(rateSeries)
			t.members[m.Name] = s
		}
		s.add(ratePoint{at: m.LastSeen, n: m.Hops}, m.Boot, t.window)
	}
	for name := range t.members {
		if !seen[name] {
			delete(t.members, name)
		}
	}
}

// selfRate returns this node's hop rate and the span it covers.
func (t *rateTracker) selfRate() (float64, time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.self.rate()
}

// memberRate returns a member's hop rate, as its heartbeats report it.
func (t *rateTracker) memberRate(name string) (float64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.members[name]
	if s == nil {
		return 0, false
	}
	r, _, ok := s.rate()
	return r, ok
}

// recentLatency returns the latencies recorded over the last interval,
// and the span that covers; ok is false before two samples.
func (t *rateTracker) recentLatency() (hist.Snapshot, time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lat) < 2 {
		return hist.Snapshot{}, 0, false
	}
	first, last := t.lat[0], t.lat[len(t.lat)-1]
	return last.h.Sub(first.h), last.at.Sub(first.at), true
}
