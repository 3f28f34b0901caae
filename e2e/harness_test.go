// Package e2e holds end-to-end tests that run real batond processes in
// isolated network namespaces. They need root and iproute2; without them
// they skip loudly (and fail when CI=true).
//
//	go test ./e2e/ -run TestNamespaceCluster -v -count=1
//
// Set E2E_ARTIFACTS to a directory to keep the daemons' logs there.
//
// harness_test.go starts clusters and reads their status; formation_test.go
// covers forming, discovery faults and clean stops; faults_test.go crashes,
// link outages, removal and the soak; interfaces_test.go a host on two
// networks; chaos_test.go the outside check of baton counters and the
// summary printed at the end.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/nstest"
)

const (
	numNodes   = 4
	httpPort   = 8380
	pollEvery  = 50 * time.Millisecond
	reqTimeout = time.Second

	// The product goal for forming the mesh is 3 s; the test fails only
	// past this generous limit, since test machines are noisy, and logs
	// the measured figure either way.
	formGoal     = 3 * time.Second
	formDeadline = 10 * time.Second
)

// status is the part of GET /status this test reads.
type status struct {
	Node    string   `json:"node"`
	Members []string `json:"members"`
	Hops    uint64   `json:"hops"`
	Leader  string   `json:"leader"`
	Routes  []string `json:"routes"`
	Batons  struct {
		Lost       uint64 `json:"lost"`
		Reinjected uint64 `json:"reinjected"`
		Duplicates uint64 `json:"duplicates"`
		Moving     *int   `json:"moving"`
	} `json:"batons"`
	Interface string `json:"interface"`
	RouteURL  string `json:"route_url"`
	ClientURL string `json:"client_url"`
	Discovery struct {
		Isolated bool `json:"isolated"`
	} `json:"discovery"`
	MemberStates []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"member_states"`
}

// node is one batond process in its namespace.
type node struct {
	name   string
	ns     *nstest.NS
	dev    string
	addr   netip.Addr
	url    string
	client *http.Client
	log    string // stderr and stdout of the daemon

	// The cluster's secret and name, for NATS clients of the test.
	secret, clusterName string

	proc    *nstest.Proc
	started time.Time
	bin     string   // what startNode ran, for restarts
	env     []string // ... and with which environment
}

// get fetches the node's status from inside its namespace.
func (n *node) get() (*status, error) {
	resp, err := n.client.Get(n.url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", n.url, resp.Status)
	}
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", n.url, err)
	}
	return &st, nil
}

// getAll fetches the status of every node concurrently; failed fetches
// leave nil and an error.
func getAll(nodes []*node) ([]*status, []error) {
	sts := make([]*status, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sts[i], errs[i] = n.get()
		}()
	}
	wg.Wait()
	return sts, errs
}

// poll calls check every pollEvery until it returns true or the deadline
// passes; it returns how long it took, and false on timeout.
func poll(timeout time.Duration, check func() bool) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if check() {
			return time.Since(start), true
		}
		if time.Now().After(deadline) {
			return time.Since(start), false
		}
		<-tick.C
	}
}

// startCluster builds batond and starts numNodes daemons, one per
// namespace of a fresh star, configured by environment variables alone
// (plus extra), and returns them with the time of the last start.
func startCluster(t *testing.T, extra ...string) ([]*node, time.Time) {
	t.Helper()
	return startClusterWith(t, nil, extra...)
}

// startClusterWith is startCluster with a prepare step that runs once the
// network exists and before any daemon starts (to inject a fault, say);
// the variables it returns are given to every daemon too.
func startClusterWith(t *testing.T, prepare func(*nstest.Star) []string, extra ...string) ([]*node, time.Time) {
	t.Helper()
	nstest.Require(t)
	bin := nstest.Build(t, "./cmd/batond")

	star := nstest.NewStar(t, numNodes)
	t.Logf("topology: switch %s (bridge %s), subnet %s/24",
		star.Switch.Name, star.Bridge, star.Nodes[0].Addr)
	if prepare != nil {
		extra = append(extra, prepare(star)...)
	}

	secret := nstest.Suffix() + nstest.Suffix() + nstest.Suffix()
	clusterName := "e2e-" + nstest.Suffix()
	logDir := t.TempDir()
	if d := os.Getenv("E2E_ARTIFACTS"); d != "" {
		logDir = filepath.Join(d, clusterName)
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	var nodes []*node
	for i, sn := range star.Nodes {
		n := &node{
			name: fmt.Sprintf("n%d", i+1),
			ns:   sn.NS,
			dev:  sn.Dev,
			addr: sn.Addr,
			url:  fmt.Sprintf("http://%s/status", netip.AddrPortFrom(sn.Addr, httpPort)),
			log:  filepath.Join(logDir, fmt.Sprintf("n%d.log", i+1)),

			secret:      secret,
			clusterName: clusterName,
		}
		n.client = sn.NS.HTTPClient(reqTimeout)
		nodes = append(nodes, n)
	}
	// Registered after the namespaces, so it runs before they are deleted.
	t.Cleanup(func() {
		for _, n := range nodes {
			n.client.CloseIdleConnections()
		}
		if t.Failed() {
			dumpLogs(t, nodes)
		}
	})

	env := func(n *node) []string {
		return append([]string{
			// PATH only for ip netns exec; nothing else is inherited,
			// so no stray BATON_* or proxy variable leaks in.
			"PATH=" + os.Getenv("PATH"),
			"BATON_NODE_NAME=" + n.name,
			"BATON_SECRET=" + secret,
			"BATON_CLUSTER_NAME=" + clusterName,
			"BATON_MULTICAST_IF=" + n.dev,
			"BATON_HTTP_ADDR=" + netip.AddrPortFrom(n.addr, httpPort).String(),
			fmt.Sprintf("BATON_MIN_NODES=%d", numNodes),
			"BATON_LOG_LEVEL=info",
		}, extra...)
	}
	for _, n := range nodes {
		startNode(t, bin, n, env(n))
	}
	lastStart := nodes[len(nodes)-1].started
	var started []string
	for _, n := range nodes {
		started = append(started, fmt.Sprintf("%s pid %d in %s at %s", n.name, n.proc.Pid(), n.ns.Name, n.addr))
	}
	t.Logf("started %d daemons within %v: %s", len(nodes),
		lastStart.Sub(nodes[0].started).Round(time.Millisecond), strings.Join(started, "; "))
	return nodes, lastStart
}

func nodeNames(nodes []*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.name
	}
	return out
}

func startNode(t *testing.T, bin string, n *node, env []string) {
	t.Helper()
	n.bin, n.env = bin, env
	// Append: a restarted node keeps its earlier log.
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own copy
	// No CommandContext: the daemon is stopped only by signals to its pid.
	cmd := n.ns.Command(context.Background(), bin)
	cmd.Env = env
	cmd.Stdout = f
	cmd.Stderr = f
	n.proc, err = nstest.Start(cmd)
	if err != nil {
		t.Fatalf("start %s: %v", n.name, err)
	}
	n.started = time.Now()
	t.Cleanup(func() {
		if err := n.proc.Stop(12 * time.Second); err != nil {
			t.Errorf("cleanup: %s: %v", n.name, err)
		}
	})
}

// checkAlive fails the test if a daemon that should run has exited.
func checkAlive(t *testing.T, nodes []*node) {
	t.Helper()
	for _, n := range nodes {
		if !n.proc.Running() {
			t.Fatalf("%s (pid %d) exited unexpectedly: %v", n.name, n.proc.Pid(), n.proc.Err())
		}
	}
}

// relayWindow checks that every node keeps relaying: it polls until at
// least window has passed since the call and every node's hops is above
// zero and above its value at the call, failing after timeout. It logs
// each node's hops and rate over the window.
func relayWindow(t *testing.T, nodes []*node, window, timeout time.Duration, what string) {
	t.Helper()
	before, errs := getAll(nodes)
	for i, st := range before {
		if st == nil {
			t.Fatalf("%s: %s status: %v", what, nodes[i].name, errs[i])
		}
	}
	start := time.Now()
	var last []*status
	var lastErrs []error
	var grewAt time.Duration
	took, ok := poll(timeout, func() bool {
		last, lastErrs = getAll(nodes)
		for i, st := range last {
			if st == nil || st.Hops == 0 || st.Hops <= before[i].Hops {
				return false
			}
		}
		if grewAt == 0 {
			grewAt = time.Since(start)
		}
		return time.Since(start) >= window
	})
	if !ok {
		t.Fatalf("%s: not every node relayed a baton within %v; hops at start: %s; now:\n%s",
			what, timeout, hopsOf(nodes, before), describe(nodes, last, lastErrs))
	}
	var rates []string
	for i, n := range nodes {
		rates = append(rates, fmt.Sprintf("%s %.0f/s", n.name, float64(last[i].Hops-before[i].Hops)/took.Seconds()))
	}
	t.Logf("%s: all relaying (all grew within %.2fs); hops %s -> %s over %.2fs (%s)",
		what, grewAt.Seconds(), hopsOf(nodes, before), hopsOf(nodes, last), took.Seconds(), strings.Join(rates, ", "))
}

func hopsOf(nodes []*node, sts []*status) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		if sts[i] == nil {
			parts[i] = n.name + "=?"
		} else {
			parts[i] = fmt.Sprintf("%s=%d", n.name, sts[i].Hops)
		}
	}
	return strings.Join(parts, " ")
}

func describe(nodes []*node, sts []*status, errs []error) string {
	var b strings.Builder
	for i, n := range nodes {
		switch {
		case sts == nil || i >= len(sts):
			fmt.Fprintf(&b, "  %s: no status\n", n.name)
		case sts[i] == nil:
			fmt.Fprintf(&b, "  %s: %v\n", n.name, errs[i])
		default:
			st := sts[i]
			var states []string
			for _, ms := range st.MemberStates {
				states = append(states, ms.Name+":"+ms.State)
			}
			fmt.Fprintf(&b, "  %s: members=%v routes=%v hops=%d states=%v\n",
				n.name, st.Members, st.Routes, st.Hops, states)
		}
	}
	return b.String()
}

// dumpLogs prints the last lines of every daemon's log.
func dumpLogs(t *testing.T, nodes []*node) {
	const tail = 40
	for _, n := range nodes {
		b, err := os.ReadFile(n.log)
		if err != nil {
			t.Logf("log of %s: %v", n.name, err)
			continue
		}
		lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
		if len(lines) > tail {
			lines = lines[len(lines)-tail:]
		}
		t.Logf("---- last %d lines of %s (%s) ----\n%s", len(lines), n.name, n.log, bytes.Join(lines, []byte("\n")))
	}
}

func without[T comparable](s []T, x T) []T {
	return slices.DeleteFunc(slices.Clone(s), func(y T) bool { return y == x })
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// reinjectedSum is how many batons the nodes found lost and injected
// again since they started.
func reinjectedSum(nodes []*node) uint64 {
	return sumOf(nodes, func(st *status) uint64 { return st.Batons.Reinjected })
}

// sumOf adds up one figure of every node's current status; a node that
// does not answer adds nothing.
func sumOf(nodes []*node, figure func(*status) uint64) uint64 {
	sts, _ := getAll(nodes)
	var n uint64
	for _, st := range sts {
		if st != nil {
			n += figure(st)
		}
	}
	return n
}

// membersAre reports whether every node's /status lists exactly want.
func membersAre(nodes []*node, want []string) bool {
	sts, _ := getAll(nodes)
	for _, st := range sts {
		if st == nil || !slices.Equal(st.Members, want) {
			return false
		}
	}
	return true
}

// leaderSeesMoving reports whether the leader sees all batons moving.
func leaderSeesMoving(nodes []*node, batons int) bool {
	sts, _ := getAll(nodes)
	for _, st := range sts {
		if st != nil && st.Node == st.Leader {
			return st.Batons.Moving != nil && *st.Batons.Moving == batons
		}
	}
	return false
}

// logSizes returns the current size of each node's log.
func logSizes(t *testing.T, nodes []*node) []int64 {
	t.Helper()
	out := make([]int64, len(nodes))
	for i, n := range nodes {
		fi, err := os.Stat(n.log)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = fi.Size()
	}
	return out
}

// linesSince returns the lines the node logged after offset.
func linesSince(t *testing.T, n *node, offset int64) []string {
	t.Helper()
	b, err := os.ReadFile(n.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b[offset:])), "\n")
}
