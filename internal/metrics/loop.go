package metrics

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-relay/baton/cluster"
)

// LoopConfig describes a node's metrics loop.
type LoopConfig struct {
	// Interval is the length of an interval: how often counters are
	// read, sent to DogStatsD and summarised in the log.
	Interval time.Duration
	// Read returns the node's counters now; the Loop sets At. It runs on
	// the Loop's goroutine and must only read (atomics, snapshots).
	Read func() Snapshot
	// Node and Cluster tag every point (host:<node>, cluster:<cluster>).
	Node, Cluster string
	// DogStatsD is the target DogStatsDTarget returned; "" turns
	// DogStatsD off (the summary log and Latest still work).
	DogStatsD string
	Logger    *slog.Logger
}

// Loop reads a node's counters once per interval and hands the report
// to every sink: DogStatsD (when on), the summary log line, and Latest
// (which /metrics reads).
//
// StartLoop takes the first snapshot and starts one goroutine. Stop ends
// it after one last, partial interval, so that counts sent to DogStatsD
// add up to the totals, then closes the DogStatsD client and waits.
type Loop struct {
	cfg    LoopConfig
	log    *slog.Logger
	statsd *dogStatsD // nil when DogStatsD is off

	latest atomic.Pointer[Report]
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// StartLoop starts the loop; see Loop. It logs once whether DogStatsD is
// on, and where it sends.
func StartLoop(cfg LoopConfig) *Loop {
	l := &Loop{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "metrics"),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if cfg.DogStatsD == "" {
		l.log.Info("DogStatsD metrics off: set DD_AGENT_HOST (with DD_DOGSTATSD_PORT) or DD_DOGSTATSD_URL to send them",
			"interval", cfg.Interval)
	} else {
		l.statsd = newDogStatsD(cfg.DogStatsD, []string{"host:" + cfg.Node, "cluster:" + cfg.Cluster})
		l.log.Info("DogStatsD metrics on", "target", cfg.DogStatsD, "interval", cfg.Interval)
	}

	first := l.read()
	// Until the first interval ends, /metrics shows the totals at start
	// and no rate, rather than nothing.
	r := Interval(first, first)
	l.latest.Store(&r)
	go l.run(first)
	return l
}

func (l *Loop) read() Snapshot {
	s := l.cfg.Read()
	s.At = time.Now()
	return s
}

// Latest returns the report of the last interval that ended.
func (l *Loop) Latest() (Report, bool) {
	r := l.latest.Load()
	if r == nil {
		return Report{}, false
	}
	return *r, true
}

// Stop ends the loop; see Loop. Safe to call twice.
func (l *Loop) Stop() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
	})
}

func (l *Loop) run(prev Snapshot) {
	defer close(l.done)
	tick := time.NewTicker(l.cfg.Interval)
	defer tick.Stop()
	var h health
	for {
		select {
		case <-l.stop:
			l.interval(&prev, &h)
			if l.statsd != nil {
				l.statsd.close()
			}
			return
		case <-tick.C:
			l.interval(&prev, &h)
		}
	}
}

// interval ends one interval: it reads the counters, stores and sends
// the report and logs the summary.
func (l *Loop) interval(prev *Snapshot, h *health) {
	cur := l.read()
	r := Interval(*prev, cur)
	*prev = cur
	l.latest.Store(&r)

	if l.statsd != nil {
		l.sendDogStatsD(r, h)
	}
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "summary", SummaryAttrs(r)...)
}

// health remembers whether DogStatsD worked in the previous interval,
// so that a failure is logged when it starts and when it ends, not at
// every interval.
type health struct {
	connectFailing, sendFailing bool
	// clean counts intervals in a row without a failed write. Over UDP
	// to a port nobody listens on, only every other write fails (the
	// kernel reports the ICMP error of one write on the next), so one
	// clean interval proves nothing.
	clean int
}

// recoveredAfter is how many clean intervals in a row end a failure.
const recoveredAfter = 3

func (l *Loop) sendDogStatsD(r Report, h *health) {
	if err := l.statsd.connect(l.cfg.Interval); err != nil {
		if !h.connectFailing {
			l.log.Warn("DogStatsD unavailable; trying again every interval", "err", err)
		}
		h.connectFailing = true
		return
	}
	if h.connectFailing {
		l.log.Info("DogStatsD client ready", "target", l.cfg.DogStatsD)
		h.connectFailing = false
	}

	if failed := l.statsd.send(r); failed > 0 {
		if !h.sendFailing {
			l.log.Warn("DogStatsD writes failing; is the agent listening?", "target", l.cfg.DogStatsD, "failed", failed)
		}
		h.sendFailing, h.clean = true, 0
		return
	}
	h.clean++
	if h.sendFailing && h.clean >= recoveredAfter {
		l.log.Info("DogStatsD writes succeed again", "target", l.cfg.DogStatsD)
		h.sendFailing = false
	}
}

// SummaryAttrs are the attributes of the summary log line of an
// interval: rate, members, leader and losses, in a fixed order.
func SummaryAttrs(r Report) []slog.Attr {
	attrs := []slog.Attr{
		slog.Duration("interval", r.Elapsed.Round(time.Millisecond)),
		slog.Int64("hop_rate", int64(r.HopRate+0.5)),
		slog.Uint64("hops", r.Hops),
		slog.Int("alive", r.Members[cluster.StateAlive]),
		slog.Int("suspect", r.Members[cluster.StateSuspect]),
		slog.Int("dead", r.Members[cluster.StateDead]),
		slog.Int("left", r.Members[cluster.StateLeft]),
		slog.String("leader", r.Leader),
		slog.Int("routes", r.Routes),
		slog.Uint64("lost", r.LostDelta),
		slog.Uint64("reinjected", r.ReinjDelta),
		slog.Uint64("lost_total", r.Lost),
	}
	if l := r.HopLatency; l.Samples > 0 {
		attrs = append(attrs,
			slog.Float64("p50_us", roundTo(micros(l.P50), 1)),
			slog.Float64("p99_us", roundTo(micros(l.P99), 1)),
		)
	}
	return attrs
}

// roundTo rounds v to the given number of decimals, for readable logs.
func roundTo(v float64, decimals int) float64 {
	p := 1.0
	for range decimals {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}
