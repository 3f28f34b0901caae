package daemon

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/metrics"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// statsdSink is a real DogStatsD listener on loopback; it keeps every
// metric line it receives.
type statsdSink struct {
	conn  net.PacketConn
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func newStatsdSink(t *testing.T) *statsdSink {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &statsdSink{conn: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return // closed at cleanup
			}
			s.mu.Lock()
			s.lines = append(s.lines, strings.Split(strings.TrimSpace(string(buf[:n])), "\n")...)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *statsdSink) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

// statsdLine is one DogStatsD line: name:value|type|#tags.
type statsdLine struct {
	name, typ string
	value     float64
	tags      []string
}

func parseStatsd(t *testing.T, line string) statsdLine {
	t.Helper()
	name, rest, ok1 := strings.Cut(line, ":")
	fields := strings.Split(rest, "|")
	if !ok1 || len(fields) != 3 || !strings.HasPrefix(fields[2], "#") {
		t.Fatalf("malformed DogStatsD line %q: want name:value|type|#tags and nothing else", line)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		t.Fatalf("line %q: value: %v", line, err)
	}
	return statsdLine{name: name, value: v, typ: fields[1], tags: strings.Split(fields[2][1:], ",")}
}

// shape is a line without its value: what must be exactly right.
func (l statsdLine) shape() string { return l.name + "|" + l.typ + "|#" + strings.Join(l.tags, ",") }

func (l statsdLine) host() string {
	for _, tag := range l.tags {
		if h, ok := strings.CutPrefix(tag, "host:"); ok {
			return h
		}
	}
	return ""
}

// expectedShapes lists every line a node sends in an interval with
// latency samples, written out here independently of the code that
// sends them.
func expectedShapes(host string) []string {
	tags := "#host:" + host + ",cluster:dtest"
	shapes := []string{
		"baton.counter|g|" + tags,
		"baton.hops|c|" + tags,
		"baton.hop_rate|g|" + tags,
		"baton.members|g|" + tags + ",state:alive",
		"baton.members|g|" + tags + ",state:suspect",
		"baton.members|g|" + tags + ",state:dead",
		"baton.members|g|" + tags + ",state:left",
		"baton.is_leader|g|" + tags,
		"baton.routes|g|" + tags,
		"baton.batons.parked|g|" + tags,
		"baton.batons.lost|c|" + tags,
		"baton.batons.reinjected|c|" + tags,
		"baton.batons.fenced|c|" + tags,
		"baton.batons.bad|c|" + tags,
		"baton.discovery.accepted|c|" + tags,
		"baton.hop_latency.samples|c|" + tags,
		"baton.hop_latency.p50|g|" + tags,
		"baton.hop_latency.p90|g|" + tags,
		"baton.hop_latency.p99|g|" + tags,
		"baton.hop_latency.max|g|" + tags,
	}
	for _, r := range []string{"auth", "bad_magic", "foreign_cluster", "malformed", "replay",
		"self", "short", "stale_boot", "too_big", "version"} {
		shapes = append(shapes, "baton.discovery.dropped|c|"+tags+",reason:"+r)
	}
	slices.Sort(shapes)
	return shapes
}

// setDD sets the Datadog library's variables for one test: only those
// given, with origin detection off so that no container id is appended
// to the lines.
func setDD(t *testing.T, set map[string]string) {
	for _, name := range []string{metrics.EnvAgentHost, metrics.EnvPort, metrics.EnvURL,
		"DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_ENTITY_ID", "DD_EXTERNAL_ENV"} {
		t.Setenv(name, "")
	}
	t.Setenv("DD_ORIGIN_DETECTION_ENABLED", "false")
	for k, v := range set {
		t.Setenv(k, v)
	}
}

// Three real daemons, configured only by DD_AGENT_HOST and
// DD_DOGSTATSD_PORT, send DogStatsD lines to a real UDP listener: every
// node sends exactly the documented names, types and tags, once per
// interval, with values that match the cluster (three alive members, n1
// the leader, hops and latency measured); and after a clean stop the
// hop counts a node sent add up to exactly the hops it relayed.
func TestDaemonsSendDogStatsDLines(t *testing.T) {
	sink := newStatsdSink(t)
	_, port, _ := net.SplitHostPort(sink.conn.LocalAddr().String())
	setDD(t, map[string]string{metrics.EnvAgentHost: "127.0.0.1", metrics.EnvPort: port})
	ds := startDaemons(t, 3, func(c *Config) { c.MetricsInterval = 200 * time.Millisecond })

	// An interval's lines, per host, once the cluster has formed and
	// relayed: the latest of each name and tags.
	latest := func() map[string]map[string]statsdLine {
		out := map[string]map[string]statsdLine{}
		for _, raw := range sink.Lines() {
			l := parseStatsd(t, raw)
			if out[l.host()] == nil {
				out[l.host()] = map[string]statsdLine{}
			}
			out[l.host()][l.shape()] = l
		}
		return out
	}
	ready := func(lines map[string]statsdLine, host string) bool {
		tags := "|#host:" + host + ",cluster:dtest"
		return lines["baton.members|g"+tags+",state:alive"].value == 3 &&
			lines["baton.routes|g"+tags].value == 2 &&
			lines["baton.hop_latency.p50|g"+tags].value > 0
	}
	waitFor(t, 10*time.Second, "every node to send an interval with three members, two routes and latency", func() bool {
		got := latest()
		return ready(got["n1"], "n1") && ready(got["n2"], "n2") && ready(got["n3"], "n3")
	})

	got := latest()
	if len(got) != 3 {
		t.Errorf("lines from hosts %v, want n1, n2, n3 only", slices.Sorted(maps.Keys(got)))
	}
	for i, host := range []string{"n1", "n2", "n3"} {
		shapes := slices.Sorted(maps.Keys(got[host]))
		if want := expectedShapes(host); !slices.Equal(shapes, want) {
			t.Errorf("%s sent lines of shapes\n%s\nwant exactly\n%s", host, strings.Join(shapes, "\n"), strings.Join(want, "\n"))
		}
		tags := "|#host:" + host + ",cluster:dtest"
		leader := got[host]["baton.is_leader|g"+tags].value
		if (i == 0) != (leader == 1) || (leader != 0 && leader != 1) {
			t.Errorf("%s: baton.is_leader %v; n1 leads", host, leader)
		}
		p50, p99 := got[host]["baton.hop_latency.p50|g"+tags].value, got[host]["baton.hop_latency.p99|g"+tags].value
		if p99 < p50 {
			t.Errorf("%s: latency p99 %vµs below p50 %vµs", host, p99, p50)
		}
		if got[host]["baton.counter|g"+tags].value <= 0 {
			t.Errorf("%s: baton.counter is 0 while batons move", host)
		}
	}

	// A clean stop sends the last, partial interval: the counts add up.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ds[0].Shutdown(ctx); err != nil {
		t.Fatalf("shutdown n1: %v", err)
	}
	relayed := ds[0].Relay().Hops()
	var sent float64
	waitFor(t, 3*time.Second, "n1's baton.hops counts to add up to its hops", func() bool {
		sent = 0
		for _, raw := range sink.Lines() {
			if l := parseStatsd(t, raw); l.name == "baton.hops" && l.host() == "n1" {
				sent += l.value
			}
		}
		return sent == float64(relayed)
	})
}

// A DD_* value the library would ignore or reject stops the daemon at
// start, with an error naming the variable.
func TestStartFailsClearlyOnBadDogStatsDVariables(t *testing.T) {
	for name, value := range map[string]string{
		metrics.EnvURL:  "http://127.0.0.1:8125",
		metrics.EnvPort: "eighty",
	} {
		setDD(t, map[string]string{metrics.EnvAgentHost: "127.0.0.1", name: value})
		cfg := testConfig(t, "n1", freePort(t))
		d, err := Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
		if err == nil {
			d.Close()
		}
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: Start error %v, want one naming %s", name, value, err, name)
		}
	}
}

func scrapeMetrics(t *testing.T, d *Daemon) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + d.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, %q; want 200 and the Prometheus text format", resp.Status, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// promValue returns the value of the family's series that has the
// given label pairs (name, value, name, value...), checking its type.
func promValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no %s in /metrics", name)
	}
	if f.GetType() != typ {
		t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		if typ == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no %s series with labels %v", name, labels)
	return 0
}

// GET /metrics of a real daemon serves the same figures in Prometheus's
// text format: the names and types documented, labelled with the node,
// and values that match the cluster and the relay's own counters.
func TestMetricsEndpointOfRealDaemons(t *testing.T) {
	setDD(t, nil)
	ds := startDaemons(t, 3, func(c *Config) { c.MetricsInterval = 200 * time.Millisecond })
	waitFor(t, 10*time.Second, "n1's /metrics to show three alive members and latency", func() bool {
		fams := scrapeMetrics(t, ds[0])
		_, lat := fams[metrics.PromLatency]
		return lat && promValue(t, fams, metrics.PromMembers, dto.MetricType_GAUGE, "state", "alive") == 3
	})

	fams := scrapeMetrics(t, ds[0])
	after := ds[0].Relay().Hops()
	node := []string{"node", "n1", "cluster", "dtest"}
	gauge, counter := dto.MetricType_GAUGE, dto.MetricType_COUNTER

	hops := promValue(t, fams, metrics.PromHops, counter, node...)
	// The figures are those of the last interval's end: at most one
	// interval behind the relay's live counter.
	if hops <= 0 || hops > float64(after) {
		t.Errorf("%s = %v, want between 1 and the relay's %d", metrics.PromHops, hops, after)
	}
	if rate := promValue(t, fams, metrics.PromHopRate, gauge, node...); rate <= 0 {
		t.Errorf("%s = %v while batons move", metrics.PromHopRate, rate)
	}
	for state, want := range map[string]float64{"alive": 3, "suspect": 0, "dead": 0, "left": 0} {
		if got := promValue(t, fams, metrics.PromMembers, gauge, "state", state); got != want {
			t.Errorf("%s{state=%q} = %v, want %v", metrics.PromMembers, state, got, want)
		}
	}
	if got := promValue(t, fams, metrics.PromIsLeader, gauge, node...); got != 1 {
		t.Errorf("n1: %s = %v, want 1", metrics.PromIsLeader, got)
	}
	if got := promValue(t, scrapeMetrics(t, ds[1]), metrics.PromIsLeader, gauge, "node", "n2"); got != 0 {
		t.Errorf("n2: %s = %v, want 0", metrics.PromIsLeader, got)
	}
	if got := promValue(t, fams, metrics.PromRoutes, gauge, node...); got != 2 {
		t.Errorf("%s = %v, want 2", metrics.PromRoutes, got)
	}
	if got := promValue(t, fams, metrics.PromCounter, gauge, node...); got <= 0 {
		t.Errorf("%s = %v while batons move", metrics.PromCounter, got)
	}
	for _, name := range []string{metrics.PromLost, metrics.PromReinjected, metrics.PromFenced, metrics.PromBad} {
		if got := promValue(t, fams, name, counter, node...); got != 0 {
			t.Errorf("%s = %v in a healthy cluster, want 0", name, got)
		}
	}
	if got := promValue(t, fams, metrics.PromDiscAccepted, counter, node...); got <= 0 {
		t.Errorf("%s = %v, yet the cluster formed by discovery", metrics.PromDiscAccepted, got)
	}
	for _, r := range cluster.DropReasons() {
		promValue(t, fams, metrics.PromDiscDropped, counter, "reason", r.String())
	}
	p50 := promValue(t, fams, metrics.PromLatency, gauge, "quantile", "0.5")
	p99 := promValue(t, fams, metrics.PromLatency, gauge, "quantile", "0.99")
	if p50 <= 0 || p50 > 1 || p99 < p50 {
		t.Errorf("latency p50 %vs p99 %vs; want seconds, 0 < p50 <= p99", p50, p99)
	}
	if got := promValue(t, fams, metrics.PromLatencySamples, counter, node...); got <= 0 {
		t.Errorf("%s = %v", metrics.PromLatencySamples, got)
	}

	// Counters only rise from one scrape to the next.
	waitFor(t, 5*time.Second, "baton_hops_total to rise", func() bool {
		return promValue(t, scrapeMetrics(t, ds[0]), metrics.PromHops, counter, node...) > hops
	})
}

// lockedBuffer collects a daemon's log; its handlers write from many
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The logs of a real run, at debug level, in text (n1, n3) and JSON (n2)
// as BATON_LOG_FORMAT chooses: the secret and everything derived from it
// never appear; DogStatsD being off is said once; a summary line comes
// every interval with rate, members, leader and losses; the JSON log is
// JSON throughout; and the log does not grow with the hops (nothing is
// logged per hop).
func TestLogsOfARealRun(t *testing.T) {
	setDD(t, nil)
	secret := "s3cr3t-" + randomHex(12)
	port := freePort(t)
	var ds []*Daemon
	var logs []*lockedBuffer
	for i, format := range []string{"text", "json", "text"} {
		cfg := testConfig(t, fmt.Sprintf("n%d", i+1), port)
		cfg.Secret, cfg.LogFormat, cfg.LogLevel = secret, format, "debug"
		cfg.MetricsInterval = 200 * time.Millisecond
		buf := &lockedBuffer{}
		log, err := NewLogger(buf, cfg.LogFormat, cfg.LogLevel)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Start(cfg, log)
		if err != nil {
			t.Fatalf("start %s: %v", cfg.NodeName, err)
		}
		t.Cleanup(d.Close)
		ds, logs = append(ds, d), append(logs, buf)
	}

	// Long enough for several intervals and many hops.
	waitFor(t, 15*time.Second, "5000 hops and 5 summaries on every node", func() bool {
		var hops uint64
		for i, d := range ds {
			hops += d.Relay().Hops()
			if strings.Count(logs[i].String(), "summary") < 5 {
				return false
			}
		}
		return hops >= 5000
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hops uint64
	for _, d := range ds {
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hops += d.Relay().Hops()
	}

	secrets := map[string]string{"BATON_SECRET": secret}
	for _, purpose := range []string{"route", "client", "sys"} {
		secrets[purpose+" password"] = cluster.DerivePassword(secret, "dtest", purpose)
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), []byte("baton/discovery/v1"), "dtest", 32)
	if err != nil {
		t.Fatal(err)
	}
	secrets["discovery key (hex)"] = hex.EncodeToString(key)
	secrets["discovery key (base64)"] = base64.StdEncoding.EncodeToString(key)

	var lines int
	for i, buf := range logs {
		text := buf.String()
		lines += strings.Count(text, "\n")
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("n%d's log contains the %s", i+1, what)
			}
		}
		if n := strings.Count(text, "DogStatsD metrics off"); n != 1 {
			t.Errorf("n%d said %d times that DogStatsD is off, want once", i+1, n)
		}
	}
	checkSummaries(t, logs[0].String(), `msg=summary`, []string{"hop_rate=", "alive=3", "leader=n1", "lost=", "reinjected="})
	checkJSONLog(t, logs[1].String())
	if lines*10 > int(hops) {
		t.Errorf("%d log lines for %d hops: something logs per hop", lines, hops)
	}
	t.Logf("%d hops, %d log lines at debug level over 3 nodes", hops, lines)
}

// checkSummaries finds the summary lines of a text log and checks that
// at least one carries every attribute.
func checkSummaries(t *testing.T, log, marker string, attrs []string) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, marker) {
			continue
		}
		ok := true
		for _, a := range attrs {
			ok = ok && strings.Contains(line, a)
		}
		if ok {
			return
		}
	}
	t.Errorf("no summary line with %v in:\n%s", attrs, log)
}

// checkJSONLog checks that every line of a BATON_LOG_FORMAT=json log is a
// JSON object with time, level and msg, and that its summaries carry the
// figures as JSON numbers.
func checkJSONLog(t *testing.T, log string) {
	t.Helper()
	summaries := 0
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("JSON log line is not JSON: %v: %s", err, line)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("JSON log line without %q: %s", k, line)
			}
		}
		if rec["msg"] == "summary" {
			summaries++
			if _, ok := rec["hop_rate"].(float64); !ok {
				t.Errorf("summary without a numeric hop_rate: %s", line)
			}
			if rec["leader"] != "n1" || rec["alive"] == nil || rec["lost"] == nil {
				continue // an early interval, before the cluster formed
			}
		}
	}
	if summaries < 5 {
		t.Errorf("%d summary lines in the JSON log, want 5 or more", summaries)
	}
}

// BATON_METRICS_INTERVAL defaults to 10s, and a value out of range is an
// error naming it, so that a typo cannot make reporting a busy loop.
func TestMetricsIntervalSetting(t *testing.T) {
	setEnv(t, map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "pi-01", "BATON_METRICS_INTERVAL": ""})
	c, err := LoadConfig()
	if err != nil || c.MetricsInterval != 10*time.Second {
		t.Errorf("default BATON_METRICS_INTERVAL: %v, %v; want 10s", c.MetricsInterval, err)
	}
	for _, bad := range []string{"1ms", "2h", "often", "-1s"} {
		setEnv(t, map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "pi-01", "BATON_METRICS_INTERVAL": bad})
		if _, err := LoadConfig(); err == nil || !strings.Contains(err.Error(), "BATON_METRICS_INTERVAL") {
			t.Errorf("BATON_METRICS_INTERVAL=%s: %v, want an error naming it", bad, err)
		}
	}
}
