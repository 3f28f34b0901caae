package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests run real embedded NATS servers and real multicast on the
// loopback interface: no root, no traffic beyond lo.

func loopback(t testing.TB) *net.Interface {
	t.Helper()
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatalf("no loopback interface: %v", err)
	}
	return ifi
}

// freeUDPPort returns a port for one test's discovery group, so tests
// running at once do not hear each other.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func testNodeConfig(t testing.TB, name string, port int) Config {
	return Config{
		Name:              name,
		Cluster:           "test",
		Secret:            "test-secret",
		ClientHost:        "127.0.0.1",
		ClientPort:        -1,
		RouteHost:         "127.0.0.1",
		RoutePort:         -1,
		AdvertiseHost:     "127.0.0.1",
		Group:             net.IPv4(239, 255, 100, 100),
		DiscoveryPort:     port,
		Interface:         loopback(t),
		TTL:               1,
		AnnounceInterval:  200 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond,
		Membership: MembershipConfig{
			SuspectAfter: 300 * time.Millisecond,
			DeadAfter:    600 * time.Millisecond,
			ForgetAfter:  time.Minute,
		},
		Routes:    RoutePlanConfig{HealAfter: 600 * time.Millisecond, Grace: 5 * time.Second},
		RoutePing: 500 * time.Millisecond,
		Logger:    testLogger(t),
	}
}

func startTestNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := StartNode(cfg)
	if err != nil {
		skipIfEmulatorLacksMulticast(t, err)
		t.Fatalf("start %s: %v", cfg.Name, err)
	}
	t.Cleanup(n.Close)
	return n
}

// waitFor polls cond every 10 ms until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startCluster(t *testing.T, n int) []*Node {
	port := freeUDPPort(t)
	var nodes []*Node
	for i := range n {
		nodes = append(nodes, startTestNode(t, testNodeConfig(t, fmt.Sprintf("n%d", i+1), port)))
	}
	return nodes
}

func names(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.cfg.Name)
	}
	return out
}

func TestNodesDiscoverAndFormFullMesh(t *testing.T) {
	nodes := startCluster(t, 3)
	all := names(nodes)

	waitFor(t, 5*time.Second, "every node to see all members alive", func() bool {
		for _, n := range nodes {
			if !slices.Equal(n.View().Alive, all) {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		want := slices.DeleteFunc(slices.Clone(all), func(s string) bool { return s == n.cfg.Name })
		waitFor(t, 5*time.Second, n.cfg.Name+" to have a route to every peer", func() bool {
			return slices.Equal(n.Routes(), want)
		})
		st := n.DiscoveryStats()
		if st.Accepted == 0 || st.Sent == 0 {
			t.Errorf("%s discovery stats %+v: nothing sent or accepted", n.cfg.Name, st)
		}
	}
}

// A node that leaves is marked left at once; a node that crashes is
// marked suspect, then dead, by the survivors.
func TestNodeLeaveAndCrash(t *testing.T) {
	nodes := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	waitFor(t, 5*time.Second, "full membership", func() bool { return len(a.View().Alive) == 3 })

	if err := c.Leave(context.Background()); err != nil {
		t.Fatalf("leave: %v", err)
	}
	left := time.Now()
	waitFor(t, time.Second, "n3 to be marked left", func() bool { return memberState(a, "n3") == StateLeft })
	if took := time.Since(left); took >= 300*time.Millisecond {
		t.Errorf("leave noticed after %v, want well before the suspect timeout", took)
	}
	c.Close()

	b.Close() // no goodbye: a crash
	waitFor(t, 3*time.Second, "n2 to be marked dead", func() bool { return memberState(a, "n2") == StateDead })
	if got := a.View().Alive; !slices.Equal(got, []string{"n1"}) {
		t.Errorf("alive %v after both peers went, want only n1", got)
	}
}

func memberState(n *Node, name string) State {
	for _, m := range n.View().Members {
		if m.Name == name {
			return m.State
		}
	}
	return -1
}

// Nodes of another cluster or with another secret on the same group and
// port are counted, and never become members.
func TestForeignNodesAreCountedNotJoined(t *testing.T) {
	port := freeUDPPort(t)
	mine := startTestNode(t, testNodeConfig(t, "n1", port))

	other := testNodeConfig(t, "x1", port)
	other.Cluster = "elsewhere"
	startTestNode(t, other)
	wrongKey := testNodeConfig(t, "x2", port)
	wrongKey.Secret = "not-the-secret"
	startTestNode(t, wrongKey)

	waitFor(t, 3*time.Second, "foreign and auth drops to be counted", func() bool {
		d := mine.DiscoveryStats().Dropped
		return d["foreign_cluster"] > 0 && d["auth"] > 0
	})
	if got := mine.View().Alive; !slices.Equal(got, []string{"n1"}) {
		t.Errorf("alive %v, want only n1", got)
	}
	if routes := mine.Routes(); len(routes) != 0 {
		t.Errorf("routed to %v", routes)
	}
}

// A port in use fails StartNode with an error (not a panic and not an
// exit inside the NATS library), and leaves nothing running.
func TestStartNodeFailsOnBusyRoutePort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	cfg := testNodeConfig(t, "n1", freeUDPPort(t))
	cfg.RoutePort = ln.Addr().(*net.TCPAddr).Port
	n, err := StartNode(cfg)
	if err == nil {
		n.Close()
		t.Fatal("StartNode succeeded on a busy route port")
	}
	t.Logf("error as reported: %v", err)
}

// A node that said goodbye but is still finishing (its leave grace) must
// not be routed to again once it is gone: peers would otherwise dial its
// address for a whole route grace period after it exits.
func TestLeavingNodeIsNotRoutedAgain(t *testing.T) {
	nodes := startCluster(t, 3)
	a, c := nodes[0], nodes[2]
	waitFor(t, 5*time.Second, "full mesh", func() bool { return len(a.Routes()) == 2 })

	if err := c.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	cURL := c.Server().RouteURL()
	time.Sleep(500 * time.Millisecond) // c's leave grace: it keeps announcing
	c.Close()

	// A wrong re-add shows as a route to c once HealAfter (600 ms) has
	// passed since c went away; watch for well over that.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if slices.Contains(a.Server().ExplicitRoutes(), cURL) {
			t.Fatalf("n1 routes to n3 again after its goodbye: %v", a.Server().ExplicitRoutes())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node that starts under a name already in use refuses to go on (two
// nodes under one name would each take the other's batons and multiply
// them); the node that was there first keeps running.
func TestDuplicateNameNewcomerStops(t *testing.T) {
	port := freeUDPPort(t)
	old := testNodeConfig(t, "n1", port)
	old.NameCheck = time.Nanosecond // counts as long established
	first := startTestNode(t, old)
	time.Sleep(50 * time.Millisecond)
	second := startTestNode(t, testNodeConfig(t, "n1", port))

	select {
	case err := <-second.Fatal():
		if !strings.Contains(err.Error(), "BATON_NODE_NAME") {
			t.Errorf("error %q does not name BATON_NODE_NAME", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the second node named n1 did not report the conflict")
	}
	select {
	case err := <-first.Fatal():
		t.Errorf("the first node was told to stop too: %v", err)
	default:
	}
}
