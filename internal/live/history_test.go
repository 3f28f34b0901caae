package live

import (
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func node(name string, hops uint64, ms int) NodeSample {
	return NodeSample{Name: name, State: "alive", Hops: hops, HopsAt: at(ms)}
}

func rates(s Series) []float64 {
	var out []float64
	for _, p := range s.Points {
		if p.Gap {
			out = append(out, -1)
		} else {
			out = append(out, p.Rate)
		}
	}
	return out
}

// A peer's rate is its hop count's rise divided by the time between its
// heartbeats, not between samples: a sample that finds no new heartbeat
// adds no point, and the next one spans both intervals.
func TestRatesUseHeartbeatTimes(t *testing.T) {
	samples := []Sample{
		{At: at(0), Nodes: []NodeSample{node("a", 0, 0), node("b", 100, -300)}},
		{At: at(1000), Nodes: []NodeSample{node("a", 1000, 1000), node("b", 600, 700)}},
		{At: at(2000), Nodes: []NodeSample{node("a", 3000, 2000), node("b", 600, 700)}}, // no heartbeat from b
		{At: at(3000), Nodes: []NodeSample{node("a", 4000, 3000), node("b", 2600, 2700)}},
	}
	series, _ := Build(samples)
	if len(series) != 2 || series[0].Node != "a" || series[1].Node != "b" {
		t.Fatalf("series %+v, want a then b", series)
	}
	if got, want := rates(series[0]), []float64{1000, 2000, 1000}; !slices.Equal(got, want) {
		t.Errorf("a: rates %v, want %v", got, want)
	}
	if got, want := rates(series[1]), []float64{500, 1000}; !slices.Equal(got, want) {
		t.Errorf("b: rates %v, want %v", got, want)
	}
	if got := series[1].Points[1].T; !got.Equal(at(2700)) {
		t.Errorf("b's second point at %v, want the heartbeat's time %v", got, at(2700))
	}
}

// A node that restarted (its hop count starts again from zero) or was
// not heard for longer than gapAfter gets a gap, never a negative or
// averaged-away rate, and its line resumes after.
func TestRestartsAndSilencesBreakTheLine(t *testing.T) {
	silence := int(gapAfter/time.Millisecond) + 1000
	samples := []Sample{
		{At: at(0), Nodes: []NodeSample{node("a", 5000, 0)}},
		{At: at(1000), Nodes: []NodeSample{node("a", 6000, 1000)}},
		{At: at(2000), Nodes: []NodeSample{node("a", 10, 2000)}}, // restarted
		{At: at(3000), Nodes: []NodeSample{node("a", 510, 3000)}},
		{At: at(3000 + silence), Nodes: []NodeSample{node("a", 900, 3000+silence)}},
		{At: at(4000 + silence), Nodes: []NodeSample{node("a", 1900, 4000+silence)}},
	}
	series, _ := Build(samples)
	if got, want := rates(series[0]), []float64{1000, -1, 500, -1, 1000}; !slices.Equal(got, want) {
		t.Errorf("rates %v, want %v (-1 is a gap)", got, want)
	}
}

// The ring keeps the last n samples, oldest first, however many came.
func TestRingKeepsTheLastSamples(t *testing.T) {
	r := NewRing(3)
	if got := r.Samples(); len(got) != 0 {
		t.Fatalf("empty ring has %d samples", len(got))
	}
	for i := range 7 {
		r.Add(Sample{At: at(i * 1000)})
	}
	var got []time.Time
	for _, s := range r.Samples() {
		got = append(got, s.At)
	}
	if want := []time.Time{at(4000), at(5000), at(6000)}; !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
}

// Epochs rise once per re-injection; an epoch a node only now learns
// (it was 0, or the baton is new to it) is not a rise.
func TestCountRises(t *testing.T) {
	for _, c := range []struct {
		prev, cur []uint16
		want      uint64
	}{
		{nil, []uint16{1, 1}, 0},
		{[]uint16{0, 1}, []uint16{3, 1}, 0},
		{[]uint16{1, 1}, []uint16{2, 1}, 1},
		{[]uint16{1, 2}, []uint16{3, 4}, 4},
		{[]uint16{1}, []uint16{2, 5}, 1},
	} {
		if got := CountRises(c.prev, c.cur); got != c.want {
			t.Errorf("CountRises(%v, %v) = %d, want %d", c.prev, c.cur, got, c.want)
		}
	}

	r := NewRing(4)
	r.Add(Sample{Epochs: []uint16{0, 1}})
	r.Add(Sample{Epochs: []uint16{2, 1}}) // baton 0 learned at epoch 2
	r.Add(Sample{Epochs: []uint16{3, 2}}) // two rises
	s := r.Samples()
	if s[1].EpochRises != 0 || s[2].EpochRises != 2 || s[2].Epochs != nil {
		t.Errorf("rises %d then %d (epochs kept: %v), want 0 then 2, epochs dropped",
			s[1].EpochRises, s[2].EpochRises, s[2].Epochs)
	}
}

// Losses, a new leader and member state changes become events at the
// sample that shows them; the first sample is only the baseline.
func TestEvents(t *testing.T) {
	samples := []Sample{
		{At: at(0), Leader: "a", Lost: 2, Nodes: []NodeSample{node("a", 0, 0), node("b", 0, 0)}},
		{At: at(1000), Leader: "a", Lost: 2, Nodes: []NodeSample{node("a", 0, 0), node("b", 0, 0)}},
		{At: at(2000), Leader: "b", Lost: 3, Reinjected: 1, EpochRises: 1,
			Nodes: []NodeSample{node("a", 0, 0), {Name: "b", State: "dead"}, node("c", 0, 0)}},
	}
	_, events := Build(samples)
	want := []Event{
		{T: at(2000), Kind: EventLoss, Lost: 1, Reinjected: 1, Seen: 1},
		{T: at(2000), Kind: EventLeader, Node: "b"},
		{T: at(2000), Kind: EventState, Node: "b", State: "dead"},
		{T: at(2000), Kind: EventState, Node: "c", State: "alive"},
	}
	if !slices.Equal(events, want) {
		t.Errorf("events\n%+v\nwant\n%+v", events, want)
	}

	b, err := json.Marshal(events[0])
	if err != nil || string(b) != `{"t":1796385602000,"kind":"loss","lost":1,"reinjected":1,"seen":1}` {
		t.Errorf("loss event JSON %s (%v)", b, err)
	}
}

// Points go out as [unix ms, rate], a gap's rate null, so the page can
// break its line there.
func TestPointJSON(t *testing.T) {
	b, err := json.Marshal([]Point{{T: at(0), Rate: 1234.56}, {T: at(1000), Gap: true}})
	if err != nil || string(b) != `[[1796385600000,1234.6],[1796385601000,null]]` {
		t.Errorf("points JSON %s (%v)", b, err)
	}
}

// The recorder samples at once and then every interval, serves what it
// kept as JSON, and after Stop its source is never called again.
func TestRecorderSamplesServesAndStops(t *testing.T) {
	var calls atomic.Int64
	var hops atomic.Uint64
	rec := StartRecorder(RecorderConfig{
		Node:     "a",
		Interval: 10 * time.Millisecond,
		Window:   time.Second,
		Source: func(now time.Time) Sample {
			calls.Add(1)
			h := hops.Add(100)
			return Sample{At: now, Leader: "a", Nodes: []NodeSample{{Name: "a", State: "alive", Hops: h, HopsAt: now}}}
		},
	})
	defer rec.Stop()
	if calls.Load() < 1 {
		t.Fatal("no sample taken at start")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.History().Series[0].Points) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 points after 10 s: %+v", rec.History())
		}
		time.Sleep(10 * time.Millisecond)
	}

	w := httptest.NewRecorder()
	rec.ServeHTTP(w, httptest.NewRequest("GET", "/history", nil))
	var h struct {
		Node       string `json:"node"`
		IntervalMS int64  `json:"interval_ms"`
		Series     []struct {
			Node   string       `json:"node"`
			Points [][2]float64 `json:"points"`
		} `json:"series"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &h); err != nil {
		t.Fatalf("decode %s: %v", w.Body, err)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if h.Node != "a" || h.IntervalMS != 10 || len(h.Series) != 1 || len(h.Series[0].Points) < 3 || h.Events == nil {
		t.Errorf("history %s", w.Body)
	}
	for _, p := range h.Series[0].Points {
		if p[1] <= 0 {
			t.Errorf("point %v: want a positive rate, the source's hops always rise", p)
		}
	}

	rec.Stop()
	rec.Stop() // twice is fine
	n := calls.Load()
	time.Sleep(50 * time.Millisecond) // five intervals: any tick would show
	if calls.Load() != n {
		t.Errorf("source called %d times after Stop", calls.Load()-n)
	}
}

// foreign matches the ways a page could load something from elsewhere.
var foreign = regexp.MustCompile(`(src|href)=["']?(https?:)?//|url\(|@import|fetch\(["'` + "`" + `]?(https?:)?//`)

// The page and its assets are compiled in and served from "/" and
// "/live/"; the page loads nothing from another origin.
func TestPageServesEmbeddedAssets(t *testing.T) {
	page := Page()
	for path, want := range map[string]string{
		"/":               "<svg id=\"chart\"",
		"/live/app.js":    "renderChart",
		"/live/style.css": "#chart",
	} {
		w := httptest.NewRecorder()
		page.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		body := w.Body.String()
		if w.Code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, body lacks %q", path, w.Code, want)
		}
		if m := foreign.FindString(body); m != "" {
			t.Errorf("GET %s loads from another origin: %q", path, m)
		}
	}
}
