package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/nstest"
)

// TestNamespaceTwoInterfaces gives n1 a second interface, on a second
// network where another node (n5, same secret and cluster) runs.
//
// With BATON_MULTICAST_IF naming the first interface, n1 announces,
// listens and advertises only there: it sends no discovery packet out of
// the second interface, n5 never hears of the first network's cluster
// (and says it is isolated), and n1's URLs carry its first address.
//
// Without BATON_MULTICAST_IF, n1 picks the interface the kernel routes
// the discovery group through and logs which one and why.
func TestNamespaceTwoInterfaces(t *testing.T) {
	nstest.RequireNft(t)
	var second *nstest.StarNode
	var other *nstest.Star
	nodes, _ := startClusterWith(t, func(star *nstest.Star) []string {
		// The second network: its own switch, n5 at .1, n1 at .2.
		sub := star.Nodes[0].Addr.As4()
		sub[2] ^= 0x80
		other = nstest.NewStarOn(t, 1, netip.AddrFrom4(sub))
		var err error
		if second, err = other.Attach(star.Nodes[0].NS, 2); err != nil {
			t.Fatal(err)
		}
		// Count the discovery packets n1 sends out of each interface:
		// the first must see some, or the count proves nothing.
		for table, dev := range map[string]string{"bt_first": star.Nodes[0].Dev, "bt_second": second.Dev} {
			count := fmt.Sprintf(`table inet %s {
	chain out { type filter hook output priority 0; oifname "%s" udp dport 45892 counter; }
}
`, table, dev)
			if err := star.Nodes[0].NS.Nft(count); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	names := nodeNames(nodes)
	n1 := nodes[0]

	n5 := &node{
		name: "n5", ns: other.Nodes[0].NS, dev: other.Nodes[0].Dev, addr: other.Nodes[0].Addr,
		url:    fmt.Sprintf("http://%s/status", netip.AddrPortFrom(other.Nodes[0].Addr, httpPort)),
		log:    strings.TrimSuffix(n1.log, "n1.log") + "n5.log",
		secret: n1.secret, clusterName: n1.clusterName,
	}
	n5.client = n5.ns.HTTPClient(reqTimeout)
	t.Cleanup(n5.client.CloseIdleConnections)
	startNode(t, n1.bin, n5, withEnv(n1.env, map[string]string{
		"BATON_NODE_NAME":    "n5",
		"BATON_MULTICAST_IF": n5.dev,
		"BATON_HTTP_ADDR":    netip.AddrPortFrom(n5.addr, httpPort).String(),
		"BATON_MIN_NODES":    "1",
	}))

	if _, ok := poll(formDeadline, func() bool { return membersAre(nodes, names) }); !ok {
		last, errs := getAll(nodes)
		t.Fatalf("the first network's cluster did not form:\n%s", describe(nodes, last, errs))
	}
	// Several announcement periods, and long enough for n5 to call
	// itself isolated (5 silent intervals).
	time.Sleep(6 * time.Second)

	st, err := n1.get()
	if err != nil {
		t.Fatal(err)
	}
	if st.Interface != n1.dev {
		t.Errorf("n1 uses interface %q, want %q (BATON_MULTICAST_IF)", st.Interface, n1.dev)
	}
	for what, url := range map[string]string{"route_url": st.RouteURL, "client_url": st.ClientURL} {
		if !strings.Contains(url, "//"+n1.addr.String()+":") {
			t.Errorf("n1's %s is %q, want its address on %s (%s)", what, url, n1.dev, n1.addr)
		}
	}
	if first := nftCounter(t, n1.ns, "bt_first"); first == 0 {
		t.Errorf("n1 sent no discovery packet out of %s, its named interface", n1.dev)
	}
	sent := nftCounter(t, n1.ns, "bt_second")
	if sent != 0 {
		t.Errorf("n1 sent %d discovery packets out of its second interface %s, want 0", sent, second.Dev)
	}
	s5, err := n5.get()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s5.Members, []string{"n5"}) || !s5.Discovery.Isolated {
		t.Errorf("n5 on the second network lists %v (isolated %v), want only itself, isolated: n1 must not announce or answer there",
			s5.Members, s5.Discovery.Isolated)
	}
	for _, n := range nodes {
		if st, err := n.get(); err == nil && slices.Contains(st.Members, "n5") {
			t.Errorf("%s lists n5, which only the second network can hear", n.name)
		}
	}
	t.Logf("TWO INTERFACES: with BATON_MULTICAST_IF=%s, n1 sent %d discovery packets out of %s; n5 heard nobody (isolated %v); n1 advertises %s",
		n1.dev, sent, second.Dev, s5.Discovery.Isolated, st.RouteURL)

	// Without the variable: route the discovery group through the first
	// interface and restart n1; it must say which interface it chose and
	// why, and rejoin its cluster.
	if _, err := n1.ns.IP("route", "add", "239.0.0.0/8", "dev", n1.dev); err != nil {
		t.Fatal(err)
	}
	if err := n1.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !n1.proc.Wait(15 * time.Second) {
		t.Fatal("n1 did not stop")
	}
	mark := logSizes(t, []*node{n1})[0]
	startNode(t, n1.bin, n1, withEnv(n1.env, map[string]string{"BATON_MULTICAST_IF": ""}))
	if _, ok := poll(formDeadline, func() bool { return membersAre(nodes, names) }); !ok {
		last, errs := getAll(nodes)
		t.Fatalf("n1 without BATON_MULTICAST_IF did not rejoin:\n%s", describe(nodes, last, errs))
	}
	chose := regexp.MustCompile(`msg="discovery interface".* interface=(\S+) .*why="([^"]*)"`)
	var line []string
	for _, l := range linesSince(t, n1, mark) {
		if m := chose.FindStringSubmatch(l); m != nil {
			line = m
			break
		}
	}
	switch {
	case line == nil:
		t.Errorf("n1 without BATON_MULTICAST_IF logged no \"discovery interface\" line")
	case line[1] != n1.dev || !strings.Contains(line[2], "route"):
		t.Errorf("n1 chose %q because %q; want %q, by the route to the group", line[1], line[2], n1.dev)
	default:
		t.Logf("TWO INTERFACES: without BATON_MULTICAST_IF, n1 logged: interface=%s why=%q", line[1], line[2])
	}
	recordChaos(chaosRow{
		scenario: "two interfaces (n1), one named", lost: "-", monotonic: "-",
		recovery: fmt.Sprintf("%d packets out of the other; unnamed: chose %s", sent, n1.dev),
	})
}

// withEnv returns env with the given variables replaced or added; an
// empty value removes the variable.
func withEnv(env []string, set map[string]string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := set[name]; !ok {
			out = append(out, kv)
		}
	}
	for name, value := range set {
		if value != "" {
			out = append(out, name+"="+value)
		}
	}
	return out
}

// nftCounter returns the packets counted by the counter rules of an inet
// table in ns.
func nftCounter(t *testing.T, ns *nstest.NS, table string) int {
	t.Helper()
	out, err := ns.Run("nft", "list", "table", "inet", table)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(out, -1)
	if m == nil {
		t.Fatalf("no counter in table %s:\n%s", table, out)
	}
	total := 0
	for _, c := range m {
		n, _ := strconv.Atoi(c[1])
		total += n
	}
	return total
}
