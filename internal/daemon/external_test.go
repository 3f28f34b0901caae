package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/nats-io/nats.go"
)

// These tests run batond against NATS servers it does not embed
// (BATON_NATS_URL): embedded-nats servers that form their cluster by
// multicast on lo, or plain servers routed to each other by explicit
// routes, which need no multicast and so also run under qemu-user (see
// scripts/test-arch.sh).

func startClusterOnlys(t *testing.T, n int) []*ClusterOnly {
	port := freePort(t)
	var cs []*ClusterOnly
	for i := range n {
		cfg := testConfig(t, fmt.Sprintf("n%d", i+1), port)
		log := slog.New(slog.NewTextHandler(tWriter{t}, nil)).With("embedded-nats", cfg.NodeName)
		c, err := StartClusterOnly(cfg, log)
		if err != nil {
			t.Fatalf("start embedded-nats %s: %v", cfg.NodeName, err)
		}
		t.Cleanup(c.Close)
		cs = append(cs, c)
	}
	return cs
}

func getClusterStatus(t *testing.T, c *ClusterOnly) ClusterStatus {
	t.Helper()
	return getJSON[ClusterStatus](t, "http://"+c.HTTPAddr()+"/status")
}

// startRoutedServers starts n plain NATS servers with the cluster's
// derived credentials, each routed explicitly to the first, and returns
// their client URLs. No multicast is involved.
func startRoutedServers(t *testing.T, n int) []string {
	var urls []string
	var first string
	for i := range n {
		cfg := testConfig(t, fmt.Sprintf("s%d", i+1), 0)
		srv, err := cluster.StartServer(cluster.ServerConfig{
			Name: cfg.NodeName, Cluster: cfg.ClusterName,
			ClientHost: "127.0.0.1", ClientPort: -1, RouteHost: "127.0.0.1", RoutePort: -1,
			AdvertiseHost:  "127.0.0.1",
			RouteUser:      cluster.RouteUser,
			RoutePassword:  cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "route"),
			ClientPassword: cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "client"),
			NodePassword:   cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "node"),
			SysPassword:    cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "sys"),
			PingInterval:   cfg.RoutePing,
			MaxPingsOut:    2,
			Logger:         slog.New(slog.NewTextHandler(tWriter{t}, nil)).With("server", cfg.NodeName),
		})
		if err != nil {
			t.Fatalf("start server %d: %v", i+1, err)
		}
		t.Cleanup(srv.Close)
		if i == 0 {
			first = srv.RouteURL()
		} else if err := srv.SetRoutes([]string{first}); err != nil {
			t.Fatal(err)
		}
		urls = append(urls, srv.ClientURL())
	}
	return urls
}

// startExternalDaemons starts one batond per URL, named n1, n2, ...
func startExternalDaemons(t *testing.T, urls []string) []*Daemon {
	var ds []*Daemon
	for i, u := range urls {
		ds = append(ds, startDaemons(t, 1, func(c *Config) {
			c.NodeName = fmt.Sprintf("n%d", i+1)
			c.NATSURL = u
		})[0])
	}
	return ds
}

// checkRelayOverExternal waits until every batond lists the three of them
// as members and relays, and until batons go straight to the peers'
// servers at the addresses their heartbeats advertise.
func checkRelayOverExternal(t *testing.T, ds []*Daemon) {
	want := []string{"n1", "n2", "n3"}
	waitFor(t, 10*time.Second, "every batond to list n1, n2, n3 as members", func() bool {
		for _, d := range ds {
			if !slices.Equal(getStatus(t, d).Members, want) {
				return false
			}
		}
		return true
	})
	hops := make([]uint64, len(ds))
	waitFor(t, 10*time.Second, "every batond to relay", func() bool {
		for i, d := range ds {
			if hops[i] = getStatus(t, d).Hops; hops[i] == 0 {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "n1 to publish directly to n2 and n3", func() bool {
		return slices.Equal(getStatus(t, ds[0]).Batons.Direct, []string{"n2", "n3"})
	})
	st := getStatus(t, ds[0])
	if st.RouteURL != "" || len(st.Routes) != 0 || st.Discovery.Sent != 0 {
		t.Errorf("a batond with BATON_NATS_URL has routes or discovery of its own: route_url %q routes %v sent %d",
			st.RouteURL, st.Routes, st.Discovery.Sent)
	}
	waitFor(t, 5*time.Second, "every batond to keep relaying", func() bool {
		for i, d := range ds {
			if getStatus(t, d).Hops < hops[i]+100 {
				return false
			}
		}
		return true
	})
}

// Three embedded-nats form one cluster by multicast on lo; three batond
// with BATON_NATS_URL, one per server and under the same names (as on
// hosts where both run under the host's name), form their membership
// over it and relay. The two memberships stay apart: each embedded-nats
// lists the three servers, each batond the three relays.
func TestBatondOverEmbeddedNATS(t *testing.T) {
	cs := startClusterOnlys(t, 3)
	waitFor(t, 10*time.Second, "every embedded-nats to list 3 members and route to the other 2", func() bool {
		for _, c := range cs {
			st := getClusterStatus(t, c)
			if !slices.Equal(st.Members, []string{"n1", "n2", "n3"}) || len(st.Routes) != 2 {
				return false
			}
		}
		return true
	})

	var urls []string
	for _, c := range cs {
		urls = append(urls, c.Node().ClientURL())
	}
	ds := startExternalDaemons(t, urls)
	checkRelayOverExternal(t, ds)

	// batond's heartbeats advertise its server's client address.
	for i, m := range ds[0].Node().View().Members {
		if m.Name != "n1" && m.ClientURL != urls[i] {
			t.Errorf("n1 sees %s at %q, want its embedded-nats %q", m.Name, m.ClientURL, urls[i])
		}
	}
	// embedded-nats counts batond's connections (control and relay) as
	// clients of its own.
	if got := getClusterStatus(t, cs[0]).Clients; got < 3 {
		t.Errorf("embedded-nats n1 has %d clients, want its own and batond's", got)
	}

	// A clean stop of one batond: the others mark it left and go on.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ds[2].Shutdown(ctx); err != nil {
		t.Fatalf("shutdown batond n3: %v", err)
	}
	waitFor(t, 3*time.Second, "n1 and n2 to list two members", func() bool {
		return slices.Equal(getStatus(t, ds[0]).Members, []string{"n1", "n2"}) &&
			slices.Equal(getStatus(t, ds[1]).Members, []string{"n1", "n2"})
	})
	if got := getClusterStatus(t, cs[0]).Members; !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Errorf("embedded-nats n1 lists %v after batond n3 stopped; its servers are all up", got)
	}
}

// The same over plain servers joined by explicit routes: the relay, its
// connections and the membership, with no multicast anywhere.
func TestBatondOverRoutedNATS(t *testing.T) {
	checkRelayOverExternal(t, startExternalDaemons(t, startRoutedServers(t, 3)))
}

// batond stops, and says why, when its server goes away: a relay that can
// take no batons must not stay in the cluster saying it relays.
func TestBatondStopsWhenItsServerGoes(t *testing.T) {
	cs := startClusterOnlys(t, 1)
	cfg := testConfig(t, "n1", freePort(t))
	cfg.NATSURL = cs[0].Node().ClientURL()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr = ln.Addr().String()
	ln.Close()
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil))) }()

	// The status endpoint is up once Start has returned.
	waitFor(t, 5*time.Second, "batond to start", func() bool {
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/status")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	cs[0].Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "connection to its NATS server ended") {
			t.Errorf("Run returned %v, want the lost connection", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batond kept running without its server")
	}
}

// A user's program reaches the whole cluster through any embedded-nats
// with the application user derived from the secret; anonymous clients
// and wrong passwords are refused.
func TestEmbeddedNATSCarriesUserTraffic(t *testing.T) {
	cs := startClusterOnlys(t, 2)
	waitFor(t, 10*time.Second, "the two embedded-nats to route to each other", func() bool {
		return len(getClusterStatus(t, cs[0]).Routes) == 1 && len(getClusterStatus(t, cs[1]).Routes) == 1
	})
	creds := ClientCredentials(testConfig(t, "x", 0))

	if nc, err := nats.Connect(cs[0].Node().ClientURL()); err == nil {
		nc.Close()
		t.Error("an anonymous client was let in")
	}
	if nc, err := nats.Connect(cs[0].Node().ClientURL(), nats.UserInfo(creds.User, "wrong")); err == nil {
		nc.Close()
		t.Error("a client with a wrong password was let in")
	}

	sub, err := nats.Connect(cs[1].Node().ClientURL(), nats.UserInfo(creds.User, creds.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch := make(chan *nats.Msg, 1)
	if _, err := sub.ChanSubscribe("app.greeting", ch); err != nil {
		t.Fatal(err)
	}
	sub.Flush()
	pub, err := nats.Connect(cs[0].Node().ClientURL(), nats.UserInfo(creds.User, creds.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// Interest crosses the route asynchronously: publish until it lands.
	deadline := time.Now().Add(5 * time.Second)
	for {
		pub.Publish("app.greeting", []byte("hello from n1"))
		select {
		case m := <-ch:
			if string(m.Data) != "hello from n1" {
				t.Fatalf("got %q", m.Data)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("a message published on n1 never reached the subscriber on n2")
		}
	}
}

// BATON_NATS_URL must be a plain nats://host[:port]; a mistake is named.
func TestNATSURLIsChecked(t *testing.T) {
	for _, bad := range []string{
		"127.0.0.1:4222",          // no scheme
		"tls://127.0.0.1:4222",    // not supported
		"nats://u:p@127.0.0.1",    // credentials derive from the secret
		"nats://:4222",            // no host
		"nats://127.0.0.1:70000",  // port out of range
		"nats://127.0.0.1:4222/x", // a path
		"nats://127.0.0.1:port",
	} {
		setEnv(t, map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "pi-01", "BATON_NATS_URL": bad})
		if _, err := LoadConfig(); err == nil || !strings.Contains(err.Error(), "BATON_NATS_URL") {
			t.Errorf("BATON_NATS_URL=%s: error %v, want one naming BATON_NATS_URL", bad, err)
		}
	}
	for _, good := range []string{"nats://127.0.0.1:4222", "nats://127.0.0.1", "nats://pi-01.local:4333"} {
		setEnv(t, map[string]string{"BATON_SECRET": "x", "BATON_NODE_NAME": "pi-01", "BATON_NATS_URL": good})
		if _, err := LoadConfig(); err != nil {
			t.Errorf("BATON_NATS_URL=%s: %v", good, err)
		}
	}
}

// What a batond with BATON_NATS_URL advertises for direct publishing: the
// host's advertised address when the server runs beside it, the server's
// own address otherwise, nothing for a host name.
func TestExternalClientURL(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"nats://127.0.0.1:4222", "nats://192.168.1.21:4222"},
		{"nats://127.0.0.1", "nats://192.168.1.21:4222"},
		{"nats://0.0.0.0:5000", "nats://192.168.1.21:5000"},
		{"nats://192.168.1.30:4222", "nats://192.168.1.30:4222"},
		{"nats://pi-02.local:4222", ""},
	} {
		if got := externalClientURL(tt.url, "192.168.1.21"); got != tt.want {
			t.Errorf("externalClientURL(%s) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

// A batond that starts before its server waits for it instead of exiting
// (at boot both start together), and joins once the server is up.
func TestBatondWaitsForALateServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here until the server starts

	cfg := testConfig(t, "n1", freePort(t))
	cfg.NATSURL = "nats://" + addr
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(tWriter{t}, nil))) }()
	defer func() {
		cancel()
		<-done
	}()

	time.Sleep(300 * time.Millisecond) // let it find no server at least once
	select {
	case err := <-done:
		t.Fatalf("batond gave up without its server: %v", err)
	default:
	}

	scfg := testConfig(t, "n1", freePort(t))
	scfg.NATSListen = addr
	c, err := StartClusterOnly(scfg, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 10*time.Second, "batond to connect to the server once it is up", func() bool {
		return getClusterStatus(t, c).Clients >= 3
	})
}
