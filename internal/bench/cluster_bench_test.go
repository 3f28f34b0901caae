package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/hist"
	"github.com/baton-relay/baton/internal/nstest"
)

// BenchmarkCluster is `make bench`: four batond processes against a raw
// TCP ring of four processes, in the same topology, interleaved round by
// round, for each number of batons in flight. It prints one table of
// medians with every baton figure as a ratio to the ring's, and writes it
// to a file. Run it once (-benchtime 1x); b.N is not used.
//
// batond runs twice per round: "baton" with DogStatsD off (no DD_*
// variables), and "baton+metrics" with DogStatsD on, sending every
// metricsInterval to a sink that counts the lines (in the first node's
// namespace, or on loopback). The two alternate in order from round to
// round, and the table ends with the hop rate of one over the other.
//
// Settings, all optional: BENCH_BATONS (default "1,64,1024"), BENCH_ROUNDS
// (3), BENCH_WARMUP (2s), BENCH_WINDOW (5s), BENCH_OUT (a file; default
// artifacts/bench/<time>.txt), BENCH_NETNS (auto: namespaces when root,
// "0" forces loopback), and GOMAXPROCS, passed to every process.
func BenchmarkCluster(b *testing.B) {
	cfg := benchConfigFromEnv(b)
	batond := nstest.Build(b, "./cmd/batond")
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	hosts := newHosts(b, cfg.netns)
	hosts.logs = strings.TrimSuffix(cfg.out, ".txt") + "-logs"
	if err := os.MkdirAll(hosts.logs, 0o755); err != nil {
		b.Fatal(err)
	}
	sink := hosts.statsdSink(b)
	defer sink.Close()
	b.Logf("topology: %s; rounds %d, warm-up %v, window %v, GOMAXPROCS=%q; DogStatsD sink %s",
		hosts.describe, cfg.rounds, cfg.warmup, cfg.window, os.Getenv("GOMAXPROCS"), sink.Addr())

	results := map[key][]run{}
	for round := 1; round <= cfg.rounds; round++ {
		for _, n := range cfg.batons {
			for _, sys := range roundSystems(round) {
				lines := sink.Lines()
				var r run
				switch sys {
				case sysTCP:
					r = hosts.measure(b, cfg, ringProcs(hosts, self, n))
				case sysBaton:
					r = hosts.measure(b, cfg, batondProcs(hosts, batond, n))
				case sysMetrics:
					r = hosts.measure(b, cfg, batondProcs(hosts, batond, n, metricsEnv(sink)...))
				}
				r.statsdLines = sink.Lines() - lines
				if sys == sysMetrics && r.statsdLines == 0 {
					b.Errorf("round %d, %d batons: metrics on, yet the sink at %s received nothing", round, n, sink.Addr())
				}
				b.Logf("round %d, %d batons, %-13s: %s hops/s, p50 %.1fµs, p99 %.1fµs, %.2fµs CPU/hop, peak RSS %.1f MB, %d DogStatsD lines",
					round, n, sys, Group(r.rate), us(r.p50), us(r.p99), us(r.cpuPerHop), mb(r.rss), r.statsdLines)
				results[key{n, sys}] = append(results[key{n, sys}], r)
			}
		}
	}
	idle := hosts.measureIdle(b, cfg, batondProcs(hosts, batond, 0))

	table := renderTable(cfg, hosts.describe, results, idle)
	fmt.Println(table)
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err == nil {
		if err := os.WriteFile(cfg.out, []byte(table), 0o644); err == nil {
			fmt.Println("written to", cfg.out)
		}
	}
}

// The systems a round measures.
const (
	sysTCP     = "tcp"
	sysBaton   = "baton"
	sysMetrics = "baton+metrics"
)

var systems = []string{sysTCP, sysBaton, sysMetrics}

// roundSystems is the order of one round: the two batond systems swap
// places every round, so that neither always runs on a machine that the
// other has just warmed (or loaded).
func roundSystems(round int) []string {
	if round%2 == 0 {
		return []string{sysTCP, sysMetrics, sysBaton}
	}
	return []string{sysTCP, sysBaton, sysMetrics}
}

// metricsInterval is BATON_METRICS_INTERVAL in the metrics runs: ten
// times as often as the default, so that a window sees several sends.
const metricsInterval = "1s"

// metricsEnv turns DogStatsD on, towards sink, with the library's own
// variables; the address is an IP literal, so nothing is resolved.
func metricsEnv(sink *StatsdSink) []string {
	return []string{
		"DD_AGENT_HOST=" + sink.Addr().IP.String(),
		"DD_DOGSTATSD_PORT=" + strconv.Itoa(sink.Addr().Port),
		"BATON_METRICS_INTERVAL=" + metricsInterval,
	}
}

// statsdSink opens the DogStatsD sink where every node can reach it: in
// the first node's namespace at its address, or on loopback.
func (h *hosts) statsdSink(b *testing.B) *StatsdSink {
	n := h.nodes[0]
	addr := n.at(5)
	var conn net.PacketConn
	listen := func() error {
		var err error
		conn, err = net.ListenPacket("udp4", addr)
		return err
	}
	var err error
	if n.ns != nil {
		err = n.ns.Do(listen)
	} else {
		err = listen()
	}
	if err != nil {
		b.Fatalf("DogStatsD sink on %s: %v", addr, err)
	}
	return NewStatsdSink(conn)
}

type benchConfig struct {
	batons         []int
	rounds         int
	warmup, window time.Duration
	out            string
	netns          bool
}

func benchConfigFromEnv(b *testing.B) benchConfig {
	c := benchConfig{rounds: 3, warmup: 2 * time.Second, window: 5 * time.Second}
	for _, f := range strings.Split(envOr("BENCH_BATONS", "1,64,1024"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("BENCH_BATONS: %q is not a list of positive numbers", f)
		}
		c.batons = append(c.batons, n)
	}
	var err error
	if c.rounds, err = strconv.Atoi(envOr("BENCH_ROUNDS", "3")); err != nil || c.rounds < 1 {
		b.Fatalf("BENCH_ROUNDS: want a positive number")
	}
	if c.warmup, err = time.ParseDuration(envOr("BENCH_WARMUP", "2s")); err != nil {
		b.Fatalf("BENCH_WARMUP: %v", err)
	}
	if c.window, err = time.ParseDuration(envOr("BENCH_WINDOW", "5s")); err != nil || c.window <= 0 {
		b.Fatalf("BENCH_WINDOW: want a positive duration")
	}
	root := filepath.Dir(strings.TrimSpace(goEnv(b, "GOMOD")))
	c.out = envOr("BENCH_OUT", filepath.Join(root, "artifacts", "bench", time.Now().UTC().Format("20060102-150405")+".txt"))
	c.netns = os.Geteuid() == 0 && os.Getenv("BENCH_NETNS") != "0"
	if _, err := exec.LookPath("ip"); err != nil {
		c.netns = false
	}
	return c
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func goEnv(b *testing.B, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		b.Fatalf("go env %s: %v", name, err)
	}
	return string(out)
}

// TestMain lets the benchmark start this same binary as a ring node.
func TestMain(m *testing.M) {
	if os.Getenv("BENCH_RING_NODE") == "1" {
		os.Exit(ringMain())
	}
	os.Exit(m.Run())
}

func ringMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	inject, _ := strconv.Atoi(os.Getenv("RING_INJECT"))
	err := RunRing(ctx, RingConfig{
		Listen:   os.Getenv("RING_LISTEN"),
		Next:     os.Getenv("RING_NEXT"),
		Status:   os.Getenv("RING_STATUS"),
		Inject:   inject,
		Deadline: 2 * time.Minute,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ring node:", err)
		return 1
	}
	return 0
}

// hosts is where the four processes of a run live: four network
// namespaces behind a bridge, or four port ranges on loopback.
type hosts struct {
	describe string
	nodes    []hostNode
	// logs receives every process's stderr, one file per process, so
	// the routine noise of clusters stopping node by node stays out of
	// the table; a failed start points there.
	logs string
	runs int
}

type hostNode struct {
	ns     *nstest.NS // nil on loopback
	dev    string
	addr   string
	base   int // first of the ports this node uses
	client *http.Client
}

func newHosts(b *testing.B, netns bool) *hosts {
	h := &hosts{}
	if netns {
		star := nstest.NewStar(b, 4)
		h.describe = fmt.Sprintf("4 network namespaces behind a bridge (%s/24)", star.Nodes[0].Addr)
		for _, sn := range star.Nodes {
			h.nodes = append(h.nodes, hostNode{
				ns: sn.NS, dev: sn.Dev, addr: sn.Addr.String(), base: 20000,
				client: sn.NS.HTTPClient(2 * time.Second),
			})
		}
		return h
	}
	h.describe = "4 processes on loopback (not root: no namespaces)"
	base := 20000 + os.Getpid()%20000
	for i := range 4 {
		h.nodes = append(h.nodes, hostNode{
			dev: "lo", addr: "127.0.0.1", base: base + 10*i,
			client: &http.Client{Timeout: 2 * time.Second},
		})
	}
	return h
}

func (n hostNode) at(offset int) string {
	return net.JoinHostPort(n.addr, strconv.Itoa(n.base+offset))
}

func (n hostNode) command(bin string, args ...string) *exec.Cmd {
	if n.ns != nil {
		return n.ns.Command(context.Background(), bin, args...)
	}
	return exec.Command(bin, args...)
}

// procSpec is one process to start for a run, and where its status is.
type procSpec struct {
	node   hostNode
	bin    string
	args   []string
	env    []string
	status string
	ready  func(st status) bool
}

type status struct {
	Node    string   `json:"node"`
	Members []string `json:"members"`
	Hops    uint64   `json:"hops"`
	Latency struct {
		Histogram map[int]uint64 `json:"histogram"`
	} `json:"latency"`
}

func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		env = append(env, "GOMAXPROCS="+v)
	}
	return env
}

func ringProcs(h *hosts, self string, batons int) []procSpec {
	var ps []procSpec
	for i, n := range h.nodes {
		next := h.nodes[(i+1)%len(h.nodes)]
		inject := 0
		if i == 0 {
			inject = batons
		}
		ps = append(ps, procSpec{
			node: n, bin: self, args: []string{"-test.run=^$"},
			env: append(baseEnv(), "BENCH_RING_NODE=1",
				"RING_LISTEN="+n.at(1), "RING_NEXT="+next.at(1),
				"RING_STATUS="+n.at(2), "RING_INJECT="+strconv.Itoa(inject)),
			status: "http://" + n.at(2) + "/status",
			ready:  func(st status) bool { return st.Hops > 0 },
		})
	}
	return ps
}

// batondProcs describes four batond processes; extra is added to each
// one's environment.
func batondProcs(h *hosts, bin string, batons int, extra ...string) []procSpec {
	cluster := "bench" + nstest.Suffix()
	port := strconv.Itoa(h.nodes[0].base + 9)
	var ps []procSpec
	for i, n := range h.nodes {
		ps = append(ps, procSpec{
			node: n, bin: bin,
			env: append(append(baseEnv(),
				fmt.Sprintf("BATON_NODE_NAME=n%d", i+1),
				"BATON_CLUSTER_NAME="+cluster,
				"BATON_SECRET=bench-"+cluster,
				"BATON_MULTICAST_IF="+n.dev,
				"BATON_MULTICAST_PORT="+port,
				"BATON_HTTP_ADDR="+n.at(2),
				"BATON_NATS_LISTEN="+n.at(3),
				"BATON_ROUTE_LISTEN="+n.at(4),
				"BATON_ADVERTISE="+n.addr,
				"BATON_BATONS="+strconv.Itoa(batons),
				"BATON_MIN_NODES=4",
				"BATON_LOG_LEVEL=warn"), extra...),
			status: "http://" + n.at(2) + "/status",
			ready: func(st status) bool {
				return len(st.Members) == 4 && (batons == 0 || st.Hops > 0)
			},
		})
	}
	return ps
}

// run is what one run of one system measured over its window.
type run struct {
	rate      float64       // hops per second, all nodes
	p50, p99  time.Duration // per-hop latency
	cpuPerHop time.Duration // CPU of all processes divided by hops
	cpuShare  float64       // CPU of one node as a share of one core (idle runs)
	rss       uint64        // peak RSS of the largest process
	// statsdLines is what the DogStatsD sink received during the run.
	statsdLines uint64
}

type started struct {
	spec procSpec
	proc *nstest.Proc
}

func (h *hosts) start(b *testing.B, specs []procSpec) []started {
	h.runs++
	var out []started
	for i, s := range specs {
		log, err := os.Create(filepath.Join(h.logs, fmt.Sprintf("run%02d-node%d.log", h.runs, i+1)))
		if err != nil {
			b.Fatal(err)
		}
		cmd := s.node.command(s.bin, s.args...)
		cmd.Env = s.env
		cmd.Stderr = log
		p, err := nstest.Start(cmd)
		log.Close() // the child has its own copy
		if err != nil {
			b.Fatalf("start %s: %v (logs in %s)", s.bin, err, h.logs)
		}
		out = append(out, started{s, p})
	}
	return out
}

func stopAll(b *testing.B, ps []started) {
	for _, p := range ps {
		if err := p.proc.Stop(10 * time.Second); err != nil {
			b.Errorf("stop: %v", err)
		}
	}
}

func (h *hosts) get(s procSpec) (status, error) {
	var st status
	resp, err := s.node.client.Get(s.status)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitReady polls every process's status until all are ready.
func (h *hosts) waitReady(b *testing.B, ps []started) {
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range ps {
		for {
			st, err := h.get(p.spec)
			if err == nil && p.spec.ready(st) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s not ready within 30s (last: %+v, %v); logs in %s", p.spec.status, st, err, h.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

type sample struct {
	at   time.Time
	hops uint64
	cpu  []time.Duration
	lat  hist.Snapshot
}

func (h *hosts) sample(b *testing.B, ps []started) sample {
	s := sample{at: time.Now()}
	for _, p := range ps {
		st, err := h.get(p.spec)
		if err != nil {
			b.Fatalf("status %s: %v", p.spec.status, err)
		}
		s.hops += st.Hops
		s.lat = s.lat.Add(hist.FromSparse(st.Latency.Histogram))
		cpu, err := CPUTime(p.proc.Pid())
		if err != nil {
			b.Fatalf("cpu of pid %d: %v", p.proc.Pid(), err)
		}
		s.cpu = append(s.cpu, cpu)
	}
	return s
}

// observe starts specs, waits until they are ready and warm, and samples
// them at the start and the end of a window; it stops them on return.
func (h *hosts) observe(b *testing.B, cfg benchConfig, specs []procSpec, window time.Duration) (s0, s1 sample, rss uint64) {
	ps := h.start(b, specs)
	defer stopAll(b, ps)
	h.waitReady(b, ps)
	time.Sleep(cfg.warmup)

	s0 = h.sample(b, ps)
	time.Sleep(window)
	s1 = h.sample(b, ps)
	return s0, s1, peakRSS(b, ps)
}

func (h *hosts) measure(b *testing.B, cfg benchConfig, specs []procSpec) run {
	s0, s1, rss := h.observe(b, cfg, specs, cfg.window)

	r := run{rss: rss}
	hops := float64(s1.hops - s0.hops)
	r.rate = hops / s1.at.Sub(s0.at).Seconds()
	var cpu time.Duration
	for i := range s1.cpu {
		cpu += s1.cpu[i] - s0.cpu[i]
	}
	if hops > 0 {
		r.cpuPerHop = time.Duration(float64(cpu) / hops)
	}
	lat := s1.lat.Sub(s0.lat)
	r.p50, r.p99 = lat.Quantile(0.50), lat.Quantile(0.99)
	return r
}

// measureIdle runs a cluster with no batons and reports the busiest
// node's CPU as a share of one core.
func (h *hosts) measureIdle(b *testing.B, cfg benchConfig, specs []procSpec) run {
	s0, s1, rss := h.observe(b, cfg, specs, 2*cfg.window)

	r := run{rss: rss}
	for i := range s1.cpu {
		share := float64(s1.cpu[i]-s0.cpu[i]) / float64(s1.at.Sub(s0.at))
		r.cpuShare = max(r.cpuShare, share)
	}
	return r
}

func peakRSS(b *testing.B, ps []started) uint64 {
	var peak uint64
	for _, p := range ps {
		rss, err := PeakRSS(p.proc.Pid())
		if err != nil {
			b.Fatalf("rss of pid %d: %v", p.proc.Pid(), err)
		}
		peak = max(peak, rss)
	}
	return peak
}

type key struct {
	batons int
	sys    string
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func mb(b uint64) float64        { return float64(b) / (1 << 20) }

// renderTable prints medians over rounds, baton against the TCP floor.
func renderTable(cfg benchConfig, topo string, res map[key][]run, idle run) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "baton benchmark, %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&sb, "topology: %s; %d rounds, warm-up %v, window %v; GOMAXPROCS=%q\n",
		topo, cfg.rounds, cfg.warmup, cfg.window, os.Getenv("GOMAXPROCS"))
	fmt.Fprintf(&sb, "floor: raw TCP ring of 4 processes, one write per hop, 8-byte word; medians of rounds\n\n")
	fmt.Fprintf(&sb, "%-7s %-13s %28s %6s %8s %8s %10s %6s %9s\n",
		"batons", "system", "hops/s median [min-max]", "ratio", "p50 µs", "p99 µs", "CPU µs/hop", "ratio", "RSS MB")

	for _, n := range cfg.batons {
		floor := summarise(res[key{n, "tcp"}])
		for _, sys := range systems {
			s := summarise(res[key{n, sys}])
			fmt.Fprintf(&sb, "%-7d %-13s %28s %6.2f %8.1f %8.1f %10.2f %6.2f %9.1f\n",
				n, sys,
				fmt.Sprintf("%s [%s-%s]", Group(s.rate.Median), Group(s.rate.Min), Group(s.rate.Max)),
				Ratio(s.rate.Median, floor.rate.Median),
				s.p50, s.p99, s.cpu, Ratio(s.cpu, floor.cpu), s.rss)
		}
	}
	fmt.Fprintf(&sb, "\nidle batond (0 batons): busiest node %.2f%% of a core; peak RSS %.1f MB\n",
		100*idle.cpuShare, mb(idle.rss))
	renderMetricsCost(&sb, cfg, res)
	return sb.String()
}

// renderMetricsCost compares the hop rate with DogStatsD on and off:
// the ratio of the medians, and the ratio within each round (the two
// runs of a round are neighbours in time, so machine drift cancels).
func renderMetricsCost(sb *strings.Builder, cfg benchConfig, res map[key][]run) {
	fmt.Fprintf(sb, "\nmetrics on/off: hop rate of %s over %s (DogStatsD every %s to a UDP sink; goal: within 5%%)\n",
		sysMetrics, sysBaton, metricsInterval)
	for _, n := range cfg.batons {
		on, off := res[key{n, sysMetrics}], res[key{n, sysBaton}]
		var perRound, cpu []float64
		var lines uint64
		for i := range min(len(on), len(off)) {
			perRound = append(perRound, Ratio(on[i].rate, off[i].rate))
			cpu = append(cpu, Ratio(float64(on[i].cpuPerHop), float64(off[i].cpuPerHop)))
			lines += on[i].statsdLines
		}
		rounds, cpuRounds := SpreadOf(perRound), SpreadOf(cpu)
		fmt.Fprintf(sb, "  %-5d batons: hop rate: ratio of medians %.3f, per round median %.3f [%.3f-%.3f]; "+
			"CPU per hop: per round median %.3f [%.3f-%.3f]; %d DogStatsD lines received\n",
			n, Ratio(summarise(on).rate.Median, summarise(off).rate.Median),
			rounds.Median, rounds.Min, rounds.Max, cpuRounds.Median, cpuRounds.Min, cpuRounds.Max, lines)
	}
}

type summary struct {
	rate          Spread
	p50, p99, cpu float64 // medians, µs
	rss           float64 // largest, MB
}

func summarise(rs []run) summary {
	var rate, p50, p99, cpu []float64
	var s summary
	for _, r := range rs {
		rate = append(rate, r.rate)
		p50 = append(p50, us(r.p50))
		p99 = append(p99, us(r.p99))
		cpu = append(cpu, us(r.cpuPerHop))
		s.rss = max(s.rss, mb(r.rss))
	}
	s.rate = SpreadOf(rate)
	s.p50, s.p99, s.cpu = SpreadOf(p50).Median, SpreadOf(p99).Median, SpreadOf(cpu).Median
	return s
}
