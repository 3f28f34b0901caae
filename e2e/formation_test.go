package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/nstest"
)

func TestNamespaceCluster(t *testing.T) {
	const batons = 4
	nodes, lastStart := startCluster(t, fmt.Sprintf("BATON_BATONS=%d", batons))
	names := nodeNames(nodes)
	started := lastStart.Sub(nodes[0].started)

	// a. Formation: every node lists all members, and has a route to
	// every other node.
	var membersAt, routesAt time.Duration
	var last []*status
	var lastErrs []error
	_, ok := poll(formDeadline, func() bool {
		last, lastErrs = getAll(nodes)
		now := time.Since(lastStart)
		members, routes := true, true
		for i, st := range last {
			if st == nil {
				members, routes = false, false
				continue
			}
			members = members && slices.Equal(st.Members, names)
			routes = routes && sameSet(st.Routes, without(names, nodes[i].name))
		}
		if members && membersAt == 0 {
			membersAt = now
		}
		if routes && routesAt == 0 {
			routesAt = now
		}
		return membersAt > 0 && routesAt > 0
	})
	checkAlive(t, nodes)
	if !ok {
		t.Fatalf("mesh not formed %v after the last start (members at %v, routes at %v); last statuses:\n%s",
			formDeadline, membersAt, routesAt, describe(nodes, last, lastErrs))
	}
	verdict := "within"
	if max(membersAt, routesAt) > formGoal {
		verdict = "ABOVE"
	}
	t.Logf("FORMATION: mesh formed %.2fs after the last start (members), routes full %.2fs (%s the %v goal)",
		membersAt.Seconds(), routesAt.Seconds(), verdict, formGoal)
	recordChaos(chaosRow{
		scenario:  fmt.Sprintf("all %d started within %v", len(nodes), started.Round(time.Millisecond)),
		lost:      "-",
		monotonic: "-",
		recovery:  fmt.Sprintf("one cluster: members %.2fs, routes %.2fs", membersAt.Seconds(), routesAt.Seconds()),
	})
	w := watch(t, nodes)

	// b. Every node relays batons, and keeps doing so.
	relayWindow(t, nodes, 0, 10*time.Second, "4 nodes, first batons")
	relayWindow(t, nodes, 1500*time.Millisecond, 5*time.Second, "4 nodes, window")
	checkAlive(t, nodes)

	// c. Stop one node (not n1) cleanly; the others go on without it.
	victim := nodes[2] // n3
	survivors := without(nodes, victim)
	survivorNames := without(names, victim.name)
	t.Logf("sending SIGTERM to %s (pid %d)", victim.name, victim.proc.Pid())
	termAt := time.Now()
	if err := victim.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", victim.name, err)
	}
	if !victim.proc.Wait(15 * time.Second) {
		t.Fatalf("%s did not exit within 15s of SIGTERM", victim.name)
	}
	exitAfter := time.Since(termAt)
	if err := victim.proc.Err(); err != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want status 0", victim.name, err)
	}
	t.Logf("%s exited with status 0, %.2fs after SIGTERM", victim.name, exitAfter.Seconds())

	var leftStates []string
	took, ok := poll(10*time.Second, func() bool {
		last, lastErrs = getAll(survivors)
		for _, st := range last {
			if st == nil || !slices.Equal(st.Members, survivorNames) {
				return false
			}
		}
		return true
	})
	checkAlive(t, survivors)
	if !ok {
		t.Fatalf("survivors do not list exactly %v within 10s of %s's exit; last statuses:\n%s",
			survivorNames, victim.name, describe(survivors, last, lastErrs))
	}
	t.Logf("survivors list exactly %v %.2fs after %s exited", survivorNames, took.Seconds(), victim.name)
	for i, st := range last {
		for _, ms := range st.MemberStates {
			if ms.Name != victim.name {
				continue
			}
			leftStates = append(leftStates, survivors[i].name+":"+ms.State)
			if ms.State != "left" {
				t.Errorf("%s sees the stopped node %s as %q, want \"left\" (a clean stop)",
					survivors[i].name, victim.name, ms.State)
			}
		}
	}
	t.Logf("member_states of %s on the survivors: %v", victim.name, leftStates)

	relayWindow(t, survivors, 1500*time.Millisecond, 5*time.Second, "3 survivors, window 1")
	relayWindow(t, survivors, 1500*time.Millisecond, 5*time.Second, "3 survivors, window 2")
	checkAlive(t, survivors)
	nothingLost(t, w, survivors, batons, fmt.Sprintf("SIGTERM of a follower (%s)", victim.name),
		fmt.Sprintf("exit 0 after %.2fs; members %.2fs later", exitAfter.Seconds(), took.Seconds()))

	// d. Stop the leader too (the lowest name, which every node seeds its
	// route to): the two left see it leave and keep relaying.
	leader := survivors[0]
	stopCleanly(t, leader, without(survivors, leader))
	nothingLost(t, w, without(survivors, leader), batons, fmt.Sprintf("SIGTERM of the leader (%s)", leader.name), "")
}

// nothingLost checks, a loss timeout and a report interval after a planned
// stop, that no node found a baton lost and the leader sees every baton
// moving, and adds the row to the chaos summary.
func nothingLost(t *testing.T, w *watcher, nodes []*node, batons int, scenario, recovery string) {
	t.Helper()
	time.Sleep(lossBound - 3*time.Second) // BATON_LOSS_TIMEOUT, a report, slack
	sts, errs := getAll(nodes)
	var reinjected uint64
	for _, st := range sts {
		if st == nil {
			t.Fatalf("after %s:\n%s", scenario, describe(nodes, sts, errs))
		}
		reinjected += st.Batons.Reinjected
		if st.Node == st.Leader && (st.Batons.Moving == nil || *st.Batons.Moving != batons) {
			t.Errorf("after %s the leader %s sees %v of %d batons moving", scenario, st.Node, st.Batons.Moving, batons)
		}
	}
	if reinjected != 0 {
		t.Errorf("after %s, %d baton(s) were found lost and injected again; a planned stop must lose none", scenario, reinjected)
	}
	if recovery == "" {
		recovery = "nothing to recover"
	}
	recordChaos(chaosRow{scenario: scenario, lost: fmt.Sprint(reinjected), dups: w.check(t, nodes), monotonic: w.verdict(), recovery: recovery})
}

// stopCleanly sends SIGTERM to victim and checks that the others list
// exactly themselves, see the victim as "left" and keep relaying.
func stopCleanly(t *testing.T, victim *node, others []*node) {
	t.Helper()
	t.Logf("sending SIGTERM to %s (pid %d)", victim.name, victim.proc.Pid())
	if err := victim.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", victim.name, err)
	}
	if !victim.proc.Wait(15 * time.Second) {
		t.Fatalf("%s did not exit within 15s of SIGTERM", victim.name)
	}
	if err := victim.proc.Err(); err != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want status 0", victim.name, err)
	}
	want := nodeNames(others)
	var last []*status
	var errs []error
	if _, ok := poll(10*time.Second, func() bool {
		last, errs = getAll(others)
		for _, st := range last {
			if st == nil || !slices.Equal(st.Members, want) {
				return false
			}
		}
		return true
	}); !ok {
		t.Fatalf("after %s left, the others do not list exactly %v:\n%s", victim.name, want, describe(others, last, errs))
	}
	for i, st := range last {
		for _, ms := range st.MemberStates {
			if ms.Name == victim.name && ms.State != "left" {
				t.Errorf("%s sees %s as %q, want \"left\"", others[i].name, victim.name, ms.State)
			}
		}
	}
	relayWindow(t, others, 1500*time.Millisecond, 5*time.Second, fmt.Sprintf("%d nodes after %s left", len(others), victim.name))
}

// dropMulticast makes the switch (the bridge) drop IPv4 multicast while
// it forwards unicast and ARP: a switch or access point that does not
// pass multicast. Senders see no error, as on a real network.
func dropMulticast(t *testing.T, star *nstest.Star) {
	t.Helper()
	nstest.RequireNft(t)
	err := star.Switch.Nft(`table bridge bt_fault {
	chain forward {
		type filter hook forward priority 0;
		ip daddr 224.0.0.0/4 drop
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
}

// TestNamespaceMulticastBlocked: where multicast does not pass, a cluster
// given BATON_SEEDS still forms and relays (announcements go by unicast),
// and one without seeds says on every node that it hears no one.
func TestNamespaceMulticastBlocked(t *testing.T) {
	t.Run("with-seeds", func(t *testing.T) {
		nodes, lastStart := startClusterWith(t, func(star *nstest.Star) []string {
			dropMulticast(t, star)
			var seeds []string
			for _, n := range star.Nodes {
				seeds = append(seeds, n.Addr.String())
			}
			return []string{"BATON_SEEDS=" + strings.Join(seeds, ",")}
		})
		names := nodeNames(nodes)
		_, ok := poll(formDeadline, func() bool { return membersAre(nodes, names) })
		if !ok {
			t.Fatalf("no cluster with seeds and multicast dropped, %v after the last start", formDeadline)
		}
		took := time.Since(lastStart)
		t.Logf("SEEDS: all %d members listed %.2fs after the last start, with the bridge dropping multicast",
			len(nodes), took.Seconds())
		recordChaos(chaosRow{scenario: "multicast dropped, BATON_SEEDS set", lost: "-", monotonic: "-",
			recovery: fmt.Sprintf("formed %.2fs after the last start", took.Seconds())})
		relayWindow(t, nodes, 1500*time.Millisecond, 10*time.Second, "seeded cluster")
	})

	t.Run("without-seeds", func(t *testing.T) {
		nodes, _ := startClusterWith(t, func(star *nstest.Star) []string {
			dropMulticast(t, star)
			return nil
		})
		type disc struct {
			Discovery struct {
				Sent     uint64 `json:"sent"`
				Isolated bool   `json:"isolated"`
			} `json:"discovery"`
			Members []string `json:"members"`
		}
		// Five announcement intervals of silence (about 5 s) make a node
		// call itself isolated.
		start := time.Now()
		if _, ok := poll(15*time.Second, func() bool {
			for _, n := range nodes {
				resp, err := n.client.Get(n.url)
				if err != nil {
					return false
				}
				var d disc
				err = json.NewDecoder(resp.Body).Decode(&d)
				resp.Body.Close()
				if err != nil || !d.Discovery.Isolated || d.Discovery.Sent == 0 || len(d.Members) != 1 {
					return false
				}
			}
			return true
		}); !ok {
			t.Fatal("not every node reports itself isolated with multicast dropped and no seeds")
		}
		for _, n := range nodes {
			log, err := os.ReadFile(n.log)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(log), "no discovery announcement heard from any other node") {
				t.Errorf("%s's log does not say that it hears no one", n.name)
			}
		}
		recordChaos(chaosRow{scenario: "multicast dropped, no seeds", lost: "-", monotonic: "-",
			recovery: fmt.Sprintf("all say isolated (not alone) after %.2fs", time.Since(start).Seconds())})
	})
}

// TestNamespaceLossyMulticast: with 40% of multicast dropped on the
// switch, as on a poor Wi-Fi, the cluster forms and membership does not
// flap, because membership comes from heartbeats over the routes, not
// from single announcements. Every node must list all members at every
// poll for 10 s.
func TestNamespaceLossyMulticast(t *testing.T) {
	nodes, _ := startClusterWith(t, func(star *nstest.Star) []string {
		nstest.RequireNft(t)
		err := star.Switch.Nft(`table bridge bt_fault {
	chain forward {
		type filter hook forward priority 0;
		ip daddr 224.0.0.0/4 numgen random mod 100 < 40 drop
	}
}
`)
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
	names := nodeNames(nodes)
	all := func() bool { return membersAre(nodes, names) }
	if _, ok := poll(formDeadline, all); !ok {
		t.Fatal("no cluster with 40% of multicast dropped")
	}

	polls, misses := 0, 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		polls++
		if !all() {
			misses++
		}
	}
	t.Logf("FLAP: with 40%% multicast loss, membership complete at %d of %d polls over 10s", polls-misses, polls)
	if misses > 0 {
		t.Errorf("membership flapped: incomplete at %d of %d polls", misses, polls)
	}
	recordChaos(chaosRow{scenario: "40% of multicast dropped", lost: fmt.Sprint(reinjectedSum(nodes)), monotonic: "-",
		recovery: fmt.Sprintf("no flap: members complete at %d of %d polls", polls-misses, polls)})
}

// TestNamespaceLateAddress starts a node whose interface has no address
// yet (a Pi whose Wi-Fi comes up after batond): it must wait, not exit,
// and join within about two announcement periods once the address
// appears.
func TestNamespaceLateAddress(t *testing.T) {
	var late *nstest.StarNode
	nodes, _ := startClusterWith(t, func(star *nstest.Star) []string {
		late = star.Nodes[len(star.Nodes)-1]
		if _, err := late.NS.IP("addr", "flush", "dev", late.Dev); err != nil {
			t.Fatal(err)
		}
		return nil
	})
	early, lateNode := nodes[:len(nodes)-1], nodes[len(nodes)-1]
	earlyNames := nodeNames(early)
	if _, ok := poll(formDeadline, func() bool { return membersAre(early, earlyNames) }); !ok {
		t.Fatal("the three nodes with addresses did not form")
	}
	time.Sleep(2 * time.Second)
	if !lateNode.proc.Running() {
		t.Fatalf("%s exited while its interface had no address: %v", lateNode.name, lateNode.proc.Err())
	}
	if log, _ := os.ReadFile(lateNode.log); !strings.Contains(string(log), "waiting for an IPv4 address") {
		t.Errorf("%s's log does not say it waits for an address", lateNode.name)
	}

	if err := late.NS.AddAddr(late.Dev, late.Addr.String()+"/24"); err != nil {
		t.Fatal(err)
	}
	names := nodeNames(nodes)
	took, ok := poll(10*time.Second, func() bool { return membersAre(nodes, names) })
	if !ok {
		t.Fatalf("%s did not join within 10s of its address appearing", lateNode.name)
	}
	t.Logf("LATE ADDRESS: %s joined %.2fs after its address appeared (two announcement periods: 2s)", lateNode.name, took.Seconds())
	recordChaos(chaosRow{scenario: "no address at start, then one", lost: "-", monotonic: "-",
		recovery: fmt.Sprintf("no crash loop; joined %.2fs after the address (promised 2s)", took.Seconds())})
	relayWindow(t, nodes, 1500*time.Millisecond, 10*time.Second, "after the late node joined")
	relayWindow(t, nodes, 1500*time.Millisecond, 10*time.Second, "after the late node joined, later")
}
