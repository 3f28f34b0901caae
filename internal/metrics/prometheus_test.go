package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches url and parses the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: %s, %s", url, resp.Status, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// value returns the value of the family's series whose labels include
// want, and whether there is one.
func value(f *dto.MetricFamily, want map[string]string) (float64, bool) {
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// /metrics serves the latest report in Prometheus's text format: every
// name with its type, the node and cluster labels, counters as running
// totals and latency quantiles in seconds.
func TestPrometheusSeries(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := snapshotAt(t0, 1000)
	cur := snapshotAt(t0.Add(2*time.Second), 3000)
	cur.Latency[100] = 10 // one bucket: every quantile is its middle
	r := Interval(prev, cur)
	srv := httptest.NewServer(PrometheusHandler("n1", "c1", func() (Report, bool) { return r, true }))
	defer srv.Close()

	fams := scrape(t, srv.URL)
	node := map[string]string{"node": "n1", "cluster": "c1"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for a, b := range node {
			m[a] = b
		}
		return m
	}
	lat := r.HopLatency.P50.Seconds()
	tests := []struct {
		name   string
		typ    dto.MetricType
		labels map[string]string
		want   float64
	}{
		{PromCounter, dto.MetricType_GAUGE, node, 3007},
		{PromHops, dto.MetricType_COUNTER, node, 3000},
		{PromHopRate, dto.MetricType_GAUGE, node, 1000},
		{PromMembers, dto.MetricType_GAUGE, with("state", "alive"), 3},
		{PromMembers, dto.MetricType_GAUGE, with("state", "suspect"), 1},
		{PromMembers, dto.MetricType_GAUGE, with("state", "dead"), 0},
		{PromMembers, dto.MetricType_GAUGE, with("state", "left"), 1},
		{PromIsLeader, dto.MetricType_GAUGE, node, 1},
		{PromRoutes, dto.MetricType_GAUGE, node, 3},
		{PromParked, dto.MetricType_GAUGE, node, 2},
		{PromLost, dto.MetricType_COUNTER, node, 1},
		{PromReinjected, dto.MetricType_COUNTER, node, 1},
		{PromFenced, dto.MetricType_COUNTER, node, 4},
		{PromBad, dto.MetricType_COUNTER, node, 5},
		{PromDiscAccepted, dto.MetricType_COUNTER, node, 10},
		{PromDiscDropped, dto.MetricType_COUNTER, with("reason", "auth"), 2},
		{PromDiscDropped, dto.MetricType_COUNTER, with("reason", "replay"), 0},
		{PromLatencySamples, dto.MetricType_COUNTER, node, 10},
		{PromLatency, dto.MetricType_GAUGE, with("quantile", "0.5"), lat},
		{PromLatency, dto.MetricType_GAUGE, with("quantile", "0.99"), lat},
		{PromLatency, dto.MetricType_GAUGE, with("quantile", "1"), lat},
	}
	for _, tt := range tests {
		f, ok := fams[tt.name]
		if !ok {
			t.Errorf("no %s in /metrics", tt.name)
			continue
		}
		if f.GetType() != tt.typ {
			t.Errorf("%s is a %v, want %v", tt.name, f.GetType(), tt.typ)
		}
		if got, ok := value(f, tt.labels); !ok || got != tt.want {
			t.Errorf("%s%v = %v (found %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	if lat <= 0 {
		t.Errorf("latency quantile %v s, want a positive duration", lat)
	}
	if _, ok := fams["process_resident_memory_bytes"]; !ok {
		t.Errorf("no process series in /metrics")
	}
}

// Before the first report, /metrics still answers, with no baton series
// rather than made-up zeros; an interval without latency samples has no
// quantiles.
func TestPrometheusWithoutReportOrSamples(t *testing.T) {
	srv := httptest.NewServer(PrometheusHandler("n1", "c1", func() (Report, bool) { return Report{}, false }))
	defer srv.Close()
	for name := range scrape(t, srv.URL) {
		if strings.HasPrefix(name, "baton_") {
			t.Errorf("%s served before any report", name)
		}
	}

	s := snapshotAt(time.Unix(1, 0), 5)
	r := Interval(s, s)
	srv2 := httptest.NewServer(PrometheusHandler("n1", "c1", func() (Report, bool) { return r, true }))
	defer srv2.Close()
	fams := scrape(t, srv2.URL)
	if _, ok := fams[PromLatency]; ok {
		t.Errorf("%s served for an interval without samples", PromLatency)
	}
	if _, ok := fams[PromHops]; !ok {
		t.Errorf("%s missing", PromHops)
	}
}
