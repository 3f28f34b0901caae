package live

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	Node     string        // this node's name, for the JSON
	Interval time.Duration // between samples
	Window   time.Duration // how much history to keep
	// Source takes a sample at now. It runs on the recorder's goroutine
	// only, so it may keep state between calls.
	Source func(now time.Time) Sample
}

// Recorder takes a sample every interval into a ring that keeps the last
// window. StartRecorder starts its goroutine; Stop ends it and waits.
type Recorder struct {
	cfg RecorderConfig

	mu   sync.Mutex
	ring *Ring // guarded by mu

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartRecorder takes the first sample at once, then one every interval.
func StartRecorder(cfg RecorderConfig) *Recorder {
	r := &Recorder{
		cfg:  cfg,
		ring: NewRing(int(cfg.Window / cfg.Interval)),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	r.record(time.Now())
	go r.run()
	return r
}

func (r *Recorder) run() {
	defer close(r.done)
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-tick.C:
			r.record(now)
		}
	}
}

// record takes a sample outside the lock (the source reads the cluster
// node and the relay, which have their own) and stores it inside.
func (r *Recorder) record(now time.Time) {
	s := r.cfg.Source(now)
	r.mu.Lock()
	r.ring.Add(s)
	r.mu.Unlock()
}

// Stop ends the recorder's goroutine and waits for it. Safe to call twice.
func (r *Recorder) Stop() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// History is the document served at GET /history.
type History struct {
	Node       string   `json:"node"`
	IntervalMS int64    `json:"interval_ms"`
	WindowS    float64  `json:"window_s"`
	NowMS      int64    `json:"now_ms"` // this node's clock, for the chart's x axis
	Series     []Series `json:"series"`
	Events     []Event  `json:"events"`
}

// History returns the rates and events of the kept window.
func (r *Recorder) History() History {
	r.mu.Lock()
	samples := r.ring.Samples()
	r.mu.Unlock()

	series, events := Build(samples)
	if series == nil {
		series = []Series{}
	}
	if events == nil {
		events = []Event{}
	}
	return History{
		Node:       r.cfg.Node,
		IntervalMS: r.cfg.Interval.Milliseconds(),
		WindowS:    r.cfg.Window.Seconds(),
		NowMS:      time.Now().UnixMilli(),
		Series:     series,
		Events:     events,
	}
}

// ServeHTTP serves History as JSON.
func (r *Recorder) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(r.History())
}
