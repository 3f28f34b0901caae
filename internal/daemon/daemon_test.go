package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/testpki"
	"github.com/baton-relay/baton/relay"
	"github.com/nats-io/nats.go"
)

// These tests run whole daemons in one process, with real embedded NATS
// servers and real multicast on the loopback interface.

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func testConfig(t *testing.T, name string, port int) Config {
	return Config{
		NodeName:          name,
		ClusterName:       "dtest",
		Secret:            "test-secret",
		MulticastAddr:     "239.255.100.100",
		MulticastPort:     port,
		MulticastIF:       "lo",
		MulticastTTL:      1,
		HTTPAddr:          "127.0.0.1:0",
		NATSListen:        "127.0.0.1:0",
		RouteListen:       "127.0.0.1:0",
		Advertise:         "127.0.0.1",
		Batons:            1,
		MinNodes:          3,
		PeerChoice:        "random",
		Direct:            true,
		AnnounceInterval:  200 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond,
		SuspectAfter:      300 * time.Millisecond,
		DeadAfter:         600 * time.Millisecond,
		RoutePing:         500 * time.Millisecond,
		RouteGrace:        5 * time.Second,
		LeaveGrace:        200 * time.Millisecond,
		LossTimeout:       time.Second,
		MetricsInterval:   time.Second,
		LogFormat:         "text",
		LogLevel:          "info",
	}
}

func freePort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func startDaemons(t *testing.T, n int, tweak func(*Config)) []*Daemon {
	port := freePort(t)
	var ds []*Daemon
	for i := range n {
		cfg := testConfig(t, fmt.Sprintf("n%d", i+1), port)
		if tweak != nil {
			tweak(&cfg)
		}
		ds = append(ds, startDaemon(t, cfg, slog.LevelInfo))
	}
	return ds
}

// startDaemon starts one daemon logging to the test at level, and closes
// it (as a crash would) at the end of the test.
func startDaemon(t *testing.T, cfg Config, level slog.Level) *Daemon {
	t.Helper()
	log := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level})).With("node", cfg.NodeName)
	d, err := Start(cfg, log)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(d.Close)
	return d
}

func getStatus(t *testing.T, d *Daemon) Status {
	t.Helper()
	return getJSON[Status](t, "http://"+d.HTTPAddr()+"/status")
}

// getJSON fetches url and decodes its JSON body, failing the test on any
// error or a reply that is not JSON.
func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	var v T
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s, %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", url, err)
	}
	return v
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			// Every daemon runs in this process: show where each
			// goroutine is, to tell a stuck loop from a slow one.
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three daemons form a cluster, every one relays, and a clean stop of one
// leaves the other two relaying with the baton intact; with batons
// published straight to the receiving peer's server and through routes.
func TestDaemonsRelayAndSurviveCleanStop(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			testRelayAndCleanStop(t, direct)
		})
	}
}

func testRelayAndCleanStop(t *testing.T, direct bool) {
	ds := startDaemons(t, 3, func(c *Config) { c.Direct = direct })

	waitFor(t, 5*time.Second, "all three to list three members in /status", func() bool {
		for _, d := range ds {
			if !slices.Equal(getStatus(t, d).Members, []string{"n1", "n2", "n3"}) {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "every node to relay", func() bool {
		for _, d := range ds {
			if getStatus(t, d).Hops == 0 {
				return false
			}
		}
		return true
	})

	st := getStatus(t, ds[0])
	if st.Node != "n1" || st.Leader != "n1" || st.Batons.Injected != 1 {
		t.Errorf("n1 status: node %q leader %q injected %d", st.Node, st.Leader, st.Batons.Injected)
	}
	if direct {
		waitFor(t, 3*time.Second, "n1 to publish directly to n2 and n3", func() bool {
			return slices.Equal(getStatus(t, ds[0]).Batons.Direct, []string{"n2", "n3"})
		})
	} else if got := getStatus(t, ds[0]).Batons.Direct; len(got) != 0 {
		t.Errorf("BATON_DIRECT=false, yet n1 publishes directly to %v", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ds[1].Shutdown(ctx); err != nil {
		t.Fatalf("shutdown n2: %v", err)
	}
	waitFor(t, 2*time.Second, "n1 and n3 to list two members", func() bool {
		return slices.Equal(getStatus(t, ds[0]).Members, []string{"n1", "n3"}) &&
			slices.Equal(getStatus(t, ds[2]).Members, []string{"n1", "n3"})
	})
	for _, m := range getStatus(t, ds[0]).MemberStates {
		if m.Name == "n2" && m.State.String() != "left" {
			t.Errorf("n2 is %v on n1, want left", m.State)
		}
	}

	if lat := getStatus(t, ds[0]).Latency; lat.Samples == 0 || lat.P50us <= 0 || lat.P99us < lat.P50us {
		t.Errorf("n1 latency %+v: no per-hop latency measured", lat)
	}

	h1, h3 := ds[0].Relay().Hops(), ds[2].Relay().Hops()
	waitFor(t, 3*time.Second, "n1 and n3 to keep relaying", func() bool {
		return ds[0].Relay().Hops() > h1+100 && ds[2].Relay().Hops() > h3+100
	})
}

// With several batons in flight, all of them keep moving: the total hop
// rate is far above what one baton could do alone is not asserted (that
// is for benchmarks), but every injected baton is counted exactly once.
func TestLeaderInjectsConfiguredBatons(t *testing.T) {
	ds := startDaemons(t, 3, func(c *Config) { c.Batons = 8; c.PeerChoice = "shuffle" })
	waitFor(t, 5*time.Second, "the leader to inject", func() bool { return ds[0].Relay().Injected() > 0 })
	if got := ds[0].Relay().Injected(); got != 8 {
		t.Errorf("leader injected %d batons, want 8", got)
	}
	for _, d := range ds[1:] {
		if got := d.Relay().Injected(); got != 0 {
			t.Errorf("%s (not leader) injected %d", d.cfg.NodeName, got)
		}
	}
}

func TestStartFailsClearlyOnBusyHTTPPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	cfg := testConfig(t, "n1", freePort(t))
	cfg.HTTPAddr = ln.Addr().String()
	_, err = Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err == nil || !strings.Contains(err.Error(), "BATON_HTTP_ADDR") {
		t.Fatalf("Start on a busy port: %v, want an error naming BATON_HTTP_ADDR", err)
	}
}

func TestStartFailsClearlyOnUnknownInterface(t *testing.T) {
	cfg := testConfig(t, "n1", freePort(t))
	cfg.MulticastIF = "nosuchif0"
	_, err := Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err == nil || !strings.Contains(err.Error(), "BATON_MULTICAST_IF") {
		t.Fatalf("Start with an unknown interface: %v, want an error naming BATON_MULTICAST_IF", err)
	}
}

// A listen address this host does not have (192.0.2.0/24 is reserved for
// documentation) is named by its variable, even with port 0. Binding it
// fails locally; nothing is sent.
func TestStartFailsClearlyOnAddressNotOnHost(t *testing.T) {
	for _, name := range []string{"BATON_NATS_LISTEN", "BATON_ROUTE_LISTEN", "BATON_HTTP_ADDR"} {
		cfg := testConfig(t, "n1", freePort(t))
		switch name {
		case "BATON_NATS_LISTEN":
			cfg.NATSListen = "192.0.2.7:0"
		case "BATON_ROUTE_LISTEN":
			cfg.RouteListen = "192.0.2.7:0"
		case "BATON_HTTP_ADDR":
			cfg.HTTPAddr = "192.0.2.7:0"
		}
		_, err := Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
		if err == nil || !strings.HasPrefix(err.Error(), name+": ") {
			t.Errorf("%s on an address not on this host: %v, want an error naming %s", name, err, name)
		}
	}
}

func TestStartFailsClearlyOnBusyNATSPorts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	for _, name := range []string{"BATON_NATS_LISTEN", "BATON_ROUTE_LISTEN"} {
		cfg := testConfig(t, "n1", freePort(t))
		if name == "BATON_NATS_LISTEN" {
			cfg.NATSListen = ln.Addr().String()
		} else {
			cfg.RouteListen = ln.Addr().String()
		}
		_, err = Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("busy %s: %v, want an error naming it", name, err)
		}
	}
}

// allMoving reports whether every baton's highest known position, over
// the given daemons, rises within a short window.
func allMoving(ds []*Daemon, batons int) bool {
	snap := func() []relay.Position {
		out := make([]relay.Position, batons)
		for _, d := range ds {
			for id := range batons {
				out[id] = max(out[id], d.Relay().Position(uint32(id)))
			}
		}
		return out
	}
	before := snap()
	time.Sleep(300 * time.Millisecond)
	after := snap()
	for id := range batons {
		if after[id] <= before[id] {
			return false
		}
	}
	return true
}

// A node that crashes takes the batons it held, or that were on their
// way to it, with it. The leader sees them stop moving and injects them
// again, and every baton moves again within the dead timeout plus the
// loss timeout; no counter goes backwards (positions only rise).
func TestCrashedNodesBatonsAreRecovered(t *testing.T) {
	for _, c := range []struct {
		name           string
		victim, leader int
	}{{"follower", 2, 0}, {"leader", 0, 1}} {
		t.Run(c.name, func(t *testing.T) {
			const batons = 8
			ds := startDaemons(t, 3, func(c *Config) { c.Batons = batons })
			waitFor(t, 5*time.Second, "all batons moving", func() bool { return allMoving(ds, batons) })

			ds[c.victim].Close() // a crash: no goodbye
			crashed := time.Now()
			survivors := slices.Delete(slices.Clone(ds), c.victim, c.victim+1)
			leader := ds[c.leader]
			// A lost baton cannot move until it is injected again, so
			// "every baton moves" holds only once all losses are
			// recovered. (A crash usually takes some batons with it, but
			// not always: none may have been on their way to the node.)
			waitFor(t, 6*time.Second, "every baton to move again", func() bool {
				return allMoving(survivors, batons)
			})
			t.Logf("all %d batons moving again %v after the crash of the %s; the leader found %d lost",
				batons, time.Since(crashed).Round(10*time.Millisecond), c.name, leader.Relay().Lost())
		})
	}
}

// A copy of a baton whose epoch was replaced dies where it lands, the
// leader then finds that baton lost and injects it again, and messages
// that are not batons are counted and dropped; none of it stops the
// relay. The test replaces the epoch itself, by announcing epoch 2 of
// baton 0 on baton.control as a leader would: the epoch-1 copy in
// flight must be fenced at its next hop.
func TestStaleAndForgedBatonsAreDropped(t *testing.T) {
	const batons = 4
	ds := startDaemons(t, 3, func(c *Config) { c.Batons = batons })
	waitFor(t, 5*time.Second, "all batons moving", func() bool { return allMoving(ds, batons) })

	nc, err := nats.Connect(ds[1].Node().Server().ClientURL(),
		nats.UserInfo(cluster.ClientUser, cluster.DerivePassword("test-secret", "dtest", "client")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	fenced := func() (n uint64) {
		for _, d := range ds {
			n += d.Relay().Fenced()
		}
		return n
	}
	// Only nodes may announce epochs (the client user may not, see
	// TestClientUserCannotForgeClusterState), so the test speaks as one.
	node, err := nats.Connect(ds[1].Node().Server().ClientURL(),
		nats.UserInfo(cluster.NodeUser, cluster.DerivePassword("test-secret", "dtest", "node")))
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	next := ds[0].Relay().Position(0).Counter() + 1_000_000
	node.Publish(relay.ControlSubject, fmt.Appendf(nil, "0:2:%d", next))
	node.Flush()
	waitFor(t, 3*time.Second, "the epoch-1 copy of baton 0 to be fenced", func() bool { return fenced() >= 1 })
	waitFor(t, 5*time.Second, "baton 0 injected again and all batons moving", func() bool {
		return ds[0].Relay().Reinjected() >= 1 && allMoving(ds, batons)
	})
	if p := ds[0].Relay().Position(0); p.Epoch() < 3 || p.Counter() <= next {
		t.Errorf("baton 0 is at %v, want epoch 3 or more, past counter %d", p, next)
	}

	// A forged copy of an old epoch, and messages that are not batons.
	before, bad := fenced(), ds[1].Relay().Bad()
	old := nats.NewMsg(relay.Subject("n2"))
	old.Header.Set("Baton", "0.1")
	old.Data = []byte("999999999")
	nc.PublishMsg(old)
	forged := [][]byte{nil, []byte("abc"), []byte("12"), bytes.Repeat([]byte("9"), 200<<10)}
	for _, data := range forged {
		nc.Publish(relay.Subject("n2"), data) // no baton header at all
	}
	unknown := nats.NewMsg(relay.Subject("n2"))
	unknown.Header.Set("Baton", "999.1") // an id this cluster does not have
	unknown.Data = []byte("5")
	nc.PublishMsg(unknown)
	nc.Flush()

	waitFor(t, 3*time.Second, "the old copy fenced and the garbage counted", func() bool {
		return fenced() > before && ds[1].Relay().Bad() >= bad+uint64(len(forged)+1)
	})
	waitFor(t, 3*time.Second, "batons still moving", func() bool { return allMoving(ds, batons) })

	// A forged copy of the current epoch, behind what n2 has seen of that
	// baton, would be a second live copy: it dies at n2 and is counted.
	waitFor(t, 3*time.Second, "n2 to have seen baton 1 past counter 10", func() bool {
		return ds[1].Relay().Position(1).Counter() > 10
	})
	dups := ds[1].Relay().Duplicates()
	behind := nats.NewMsg(relay.Subject("n2"))
	behind.Header.Set("Baton", fmt.Sprintf("1.%d", ds[1].Relay().Position(1).Epoch()))
	behind.Data = []byte("1")
	nc.PublishMsg(behind)
	nc.Flush()
	waitFor(t, 3*time.Second, "the copy behind counted as a duplicate at n2", func() bool {
		return ds[1].Relay().Duplicates() == dups+1
	})
	waitFor(t, 3*time.Second, "batons still moving", func() bool { return allMoving(ds, batons) })

	// A forged copy with a made-up epoch would fence the real baton and
	// restart its counter: it is held, since no announcement established
	// that epoch, and dropped as unannounced after the loss timeout. The
	// real baton 2 goes on in its epoch, its counter never reset.
	real := ds[1].Relay().Position(2)
	forgedEpoch := nats.NewMsg(relay.Subject("n2"))
	forgedEpoch.Header.Set("Baton", fmt.Sprintf("2.%d", real.Epoch()+5))
	forgedEpoch.Data = []byte("3")
	nc.PublishMsg(forgedEpoch)
	nc.Flush()
	waitFor(t, 5*time.Second, "the forged epoch dropped as unannounced at n2", func() bool {
		return ds[1].Relay().Unannounced() == 1
	})
	for _, d := range ds {
		if p := d.Relay().Position(2); p.Epoch() > real.Epoch() {
			t.Errorf("%s took baton 2 at %v: a forged epoch got past the fencing", d.cfg.NodeName, p)
		}
	}
	waitFor(t, 3*time.Second, "batons still moving", func() bool { return allMoving(ds, batons) })
}

// A rolling restart, every node stopped cleanly and started again one at
// a time (the leader too), loses no baton: nobody ever finds one lost,
// and all keep moving.
func TestRollingRestartLosesNothing(t *testing.T) {
	const batons = 4
	port := freePort(t)
	start := func(name string) *Daemon {
		cfg := testConfig(t, name, port)
		cfg.Batons = batons
		return startDaemon(t, cfg, slog.LevelDebug)
	}
	ds := []*Daemon{start("n1"), start("n2"), start("n3")}
	waitFor(t, 5*time.Second, "all batons moving", func() bool { return allMoving(ds, batons) })

	var lost uint64
	for i, name := range []string{"n1", "n2", "n3"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := ds[i].Shutdown(ctx); err != nil {
			t.Fatalf("shutdown %s: %v", name, err)
		}
		cancel()
		lost += ds[i].Relay().Lost()

		ds[i] = start(name)
		waitFor(t, 5*time.Second, name+" back and all batons moving", func() bool {
			return len(ds[i].Node().View().Alive) == 3 && allMoving(ds, batons)
		})
	}
	for _, d := range ds {
		lost += d.Relay().Lost()
	}
	if lost != 0 {
		t.Errorf("%d batons were found lost during a rolling restart", lost)
	}
}

// The client port takes only the cluster's users: anonymous clients and
// wrong passwords are refused; the sys user reaches every server of the
// cluster through the system account, as `nats server list` does.
func TestClientPortNeedsCredentials(t *testing.T) {
	ds := startDaemons(t, 3, nil)
	waitFor(t, 5*time.Second, "full membership", func() bool { return len(ds[0].Node().View().Alive) == 3 })
	url := ds[0].Node().Server().ClientURL()

	for name, opts := range map[string][]nats.Option{
		"anonymous":      nil,
		"wrong password": {nats.UserInfo(cluster.ClientUser, "guess")},
		"route password": {nats.UserInfo(cluster.ClientUser, cluster.DerivePassword("test-secret", "dtest", "route"))},
	} {
		if nc, err := nats.Connect(url, opts...); err == nil {
			nc.Close()
			t.Errorf("%s client was let in", name)
		}
	}

	sys, err := nats.Connect(url, nats.UserInfo(cluster.SysUser, cluster.DerivePassword("test-secret", "dtest", "sys")))
	if err != nil {
		t.Fatalf("sys user: %v", err)
	}
	defer sys.Close()
	inbox := nats.NewInbox()
	sub, err := sys.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.PublishRequest("$SYS.REQ.SERVER.PING", inbox, nil); err != nil {
		t.Fatal(err)
	}
	servers := map[string]bool{}
	for len(servers) < 3 {
		m, err := sub.NextMsg(3 * time.Second)
		if err != nil {
			t.Fatalf("server ping answered by %v only: %v", servers, err)
		}
		var resp struct {
			Server struct {
				Name string `json:"name"`
			} `json:"server"`
		}
		json.Unmarshal(m.Data, &resp)
		servers[resp.Server.Name] = true
	}
}

// With BATON_ROUTE_TLS_* set, daemons form their cluster over mutual TLS
// and relay; a daemon whose certificate another CA signed is refused its
// routes, and so never becomes a member, though it has the secret.
func TestRouteMutualTLSCluster(t *testing.T) {
	ca, other := testpki.NewCA(t, "cluster CA"), testpki.NewCA(t, "another CA")
	dir := t.TempDir()
	ds := startDaemons(t, 3, func(c *Config) {
		sub := filepath.Join(dir, c.NodeName)
		os.Mkdir(sub, 0o700)
		c.RouteTLSCert, c.RouteTLSKey, c.RouteTLSCA = ca.Files(t, sub, c.NodeName, c.ClusterName)
	})
	waitFor(t, 5*time.Second, "3 members over mutual TLS, batons moving", func() bool {
		return allMoving(ds, 1) && slices.Equal(getStatus(t, ds[0]).Members, []string{"n1", "n2", "n3"})
	})

	cfg := testConfig(t, "n4", ds[0].cfg.MulticastPort)
	sub := filepath.Join(dir, "n4")
	os.Mkdir(sub, 0o700)
	cfg.RouteTLSCert, cfg.RouteTLSKey, _ = other.Files(t, sub, "n4", cfg.ClusterName)
	cfg.RouteTLSCA = ds[0].cfg.RouteTLSCA // it trusts the cluster; the cluster does not trust it
	d, err := Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)).With("node", "n4"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if m := getStatus(t, ds[0]).Members; slices.Contains(m, "n4") {
			t.Fatalf("n1 lists n4, whose certificate the cluster's CA did not sign: %v", m)
		}
		if r := d.node.Routes(); len(r) != 0 {
			t.Fatalf("n4 has routes %v without a certificate from the cluster's CA", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The route TLS variables go together, and a file that cannot be read
// is named by its variable.
func TestRouteTLSConfigErrors(t *testing.T) {
	cfg := testConfig(t, "n1", freePort(t))
	cfg.RouteTLSCert = "/nonexistent/n1.crt"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "BATON_ROUTE_TLS_KEY") || !strings.Contains(err.Error(), "all three") {
		t.Errorf("only BATON_ROUTE_TLS_CERT set: got %v, want an error naming the three variables", err)
	}

	cfg.RouteTLSKey, cfg.RouteTLSCA = "/nonexistent/n1.key", "/nonexistent/ca.crt"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("all three set: %v", err)
	}
	_, err = Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err == nil || !strings.Contains(err.Error(), "BATON_ROUTE_TLS_CERT") || !strings.Contains(err.Error(), "/nonexistent/n1.crt") {
		t.Errorf("missing certificate file: got %v, want an error naming BATON_ROUTE_TLS_CERT and the file", err)
	}

	dir := t.TempDir()
	cfg.RouteTLSCert, cfg.RouteTLSKey, _ = testpki.NewCA(t, "ca").Files(t, dir, "n1", "dtest")
	cfg.RouteTLSCA = cfg.RouteTLSKey // a key, not a certificate
	_, err = Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err == nil || !strings.Contains(err.Error(), "BATON_ROUTE_TLS_CA: no PEM certificate") {
		t.Errorf("CA file without a certificate: got %v, want an error naming BATON_ROUTE_TLS_CA", err)
	}
}

// A leader that crashes and is back at once is leader again, with an empty
// table: it must learn where the batons it lost had got to (from the
// others' full progress reports) before it calls them lost, and inject
// them again from there, not from counter 0. Every baton's counter ends
// above where it was before the crash, and no second copy of an epoch is
// ever made.
func TestRestartedLeaderContinuesCounters(t *testing.T) {
	const batons = 8
	port := freePort(t)
	start := func(name string) *Daemon {
		cfg := testConfig(t, name, port)
		cfg.Batons = batons
		return startDaemon(t, cfg, slog.LevelInfo)
	}
	ds := []*Daemon{start("n1"), start("n2"), start("n3")}
	waitFor(t, 5*time.Second, "all batons moving", func() bool { return allMoving(ds, batons) })

	ds[0].Close() // a crash: no goodbye
	before := make([]uint64, batons)
	for id := range batons {
		for _, d := range ds[1:] {
			before[id] = max(before[id], d.Relay().Position(uint32(id)).Counter())
		}
	}
	ds[0] = start("n1")

	waitFor(t, 8*time.Second, "every baton to move again", func() bool { return allMoving(ds, batons) })
	for id := range batons {
		var now uint64
		for _, d := range ds {
			now = max(now, d.Relay().Position(uint32(id)).Counter())
		}
		if now < before[id] {
			t.Errorf("baton %d is at counter %d, below the %d it had reached before the leader crashed", id, now, before[id])
		}
	}
	for _, d := range ds {
		if n := d.Relay().Duplicates(); n != 0 {
			t.Errorf("%s dropped %d second copies of a baton: one was injected again below its counter", d.cfg.NodeName, n)
		}
	}
}

// The client credentials (for the nats CLI and programs of one's own) may
// read everything but not publish what the cluster believes: heartbeats,
// progress reports and epoch announcements. The server refuses such a
// publish, and the cluster does not see it: a forged epoch announcement
// would otherwise fence a live baton.
func TestClientUserCannotForgeClusterState(t *testing.T) {
	const batons = 2
	ds := startDaemons(t, 3, func(c *Config) { c.Batons = batons })
	waitFor(t, 5*time.Second, "all batons moving", func() bool { return allMoving(ds, batons) })

	refused := make(chan string, 8)
	nc, err := nats.Connect(ds[0].Node().Server().ClientURL(),
		nats.UserInfo(cluster.ClientUser, cluster.DerivePassword("test-secret", "dtest", "client")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refused <- err.Error() }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	before := ds[1].Relay().Position(0)
	for _, subject := range []string{relay.ControlSubject, relay.ProgressPrefix + "n9", cluster.HeartbeatSubjectPrefix + "n9"} {
		nc.Publish(subject, []byte("0:9:5"))
		nc.Flush()
		select {
		case e := <-refused:
			if !strings.Contains(e, "Permissions Violation") || !strings.Contains(e, subject) {
				t.Errorf("publish on %s: error %q, want a permissions violation naming the subject", subject, e)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("publish on %s by the client user was not refused", subject)
		}
	}
	waitFor(t, 3*time.Second, "batons still moving", func() bool { return allMoving(ds, batons) })
	if p := ds[1].Relay().Position(0); p.Epoch() != before.Epoch() {
		t.Errorf("baton 0 went from epoch %d to %d after a refused announcement", before.Epoch(), p.Epoch())
	}
	if m := ds[0].Node().View().Alive; slices.Contains(m, "n9") {
		t.Errorf("a refused heartbeat made n9 a member: %v", m)
	}

	// Reading them stays allowed: `nats sub 'baton.>'` must work.
	sub, err := nc.SubscribeSync(relay.ProgressPrefix + "*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(3 * time.Second); err != nil {
		t.Errorf("the client user cannot read progress reports: %v", err)
	}
}
