package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/daemon"
	"github.com/nats-io/nats.go"
)

// These tests run the real embedded-nats binary, three processes on
// loopback with multicast discovery on lo, configured by BATON_*
// variables alone.

const secret = "embedded-nats-test-secret"

// build builds the command in dir ("." for embedded-nats).
func build(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(must(filepath.Abs(dir))))
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/baton-relay/baton/internal/daemon.Version=test-1", "-o", bin, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeUDP(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

type proc struct {
	name      string
	cmd       *exec.Cmd
	httpURL   string
	clientURL string
	done      chan error
	mu        sync.Mutex
	logs      bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.Write(b)
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// baseEnv is the environment a host's embedded-nats and batond share.
// Every address is on loopback and the discovery interface is lo:
// nothing leaves this host.
func baseEnv(name string, discoveryPort int) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"BATON_NODE_NAME=" + name,
		"BATON_CLUSTER_NAME=entest",
		"BATON_SECRET=" + secret,
		"BATON_MULTICAST_IF=lo",
		fmt.Sprintf("BATON_MULTICAST_PORT=%d", discoveryPort),
		"BATON_ROUTE_LISTEN=127.0.0.1:0",
		"BATON_ADVERTISE=127.0.0.1",
		"BATON_ANNOUNCE_INTERVAL=200ms",
		"BATON_HEARTBEAT_INTERVAL=100ms",
		"BATON_SUSPECT_AFTER=300ms",
		"BATON_DEAD_AFTER=600ms",
	}
}

// start runs one embedded-nats; it binds free ports of its own choosing
// (port 0), which it logs. natsURL, when set, is the BATON_NATS_URL of a
// shared environment, which embedded-nats must ignore.
func start(t *testing.T, bin, name string, discoveryPort int, natsURL string) *proc {
	t.Helper()
	env := append(baseEnv(name, discoveryPort),
		"BATON_HTTP_ADDR=127.0.0.1:0",
		"BATON_NATS_LISTEN=127.0.0.1:0")
	if natsURL != "" {
		env = append(env, "BATON_NATS_URL="+natsURL)
	}
	p := launch(t, bin, name, env)
	p.clientURL = p.await(t, `msg="nats ready" client_url=(nats://\S+)`)
	return p
}

// launch starts bin with env and waits for its status endpoint, whose
// address it reads from the log: choosing ports ahead for the process
// would race with everything else that binds ports on this machine.
func launch(t *testing.T, bin, name string, env []string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan error, 1)}
	p.cmd = exec.Command(bin)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (%s) log:\n%s", name, filepath.Base(bin), p.log())
		}
	})
	p.httpURL = p.await(t, `msg="status endpoint" url=(http://\S+)`)
	return p
}

// await waits for a log line matching pattern and returns its first group.
func (p *proc) await(t *testing.T, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	var got string
	waitFor(t, 20*time.Second, p.name+" to log "+pattern, func() bool {
		if m := re.FindStringSubmatch(p.log()); m != nil {
			got = m[1]
			return true
		}
		return false
	})
	return got
}

func status(p *proc) (daemon.ClusterStatus, error) {
	var st daemon.ClusterStatus
	return st, getJSON(p.httpURL, &st)
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Three embedded-nats processes form one cluster (every /status lists the
// three and routes to the other two), a user's program publishes on one
// server and its subscriber on another receives, with the application
// user derived from the secret; SIGTERM stops each cleanly and the others
// see it leave.
func TestThreeProcessesFormOneCluster(t *testing.T) {
	bin := build(t, ".")
	if out, err := exec.Command(bin, "version").Output(); err != nil || string(out) != "embedded-nats test-1\n" {
		t.Fatalf("embedded-nats version: %q, %v", out, err)
	}

	port := freeUDP(t)
	var ps []*proc
	for _, name := range []string{"a", "b", "c"} {
		// batond's variable, as a shared env file would carry it.
		ps = append(ps, start(t, bin, name, port, "nats://127.0.0.1:1"))
	}
	began := time.Now()
	waitFor(t, 15*time.Second, "every /status to list a, b, c and route to the other two", func() bool {
		for _, p := range ps {
			st, err := status(p)
			if err != nil || !slices.Equal(st.Members, []string{"a", "b", "c"}) || len(st.Routes) != 2 {
				return false
			}
		}
		return true
	})
	t.Logf("three processes formed one cluster %v after the last start", time.Since(began).Round(time.Millisecond))
	st, _ := status(ps[0])
	if st.Node != "a" || st.Version != "test-1" || st.Cluster != "entest" || st.ClientURL != ps[0].clientURL {
		t.Errorf("a's status: node %q version %q cluster %q client_url %q", st.Node, st.Version, st.Cluster, st.ClientURL)
	}

	// The user's program: subscriber on c, publisher on a.
	creds := daemon.ClientCredentials(daemon.Config{Secret: secret, ClusterName: "entest"})
	if nc, err := nats.Connect(ps[0].clientURL); err == nil {
		nc.Close()
		t.Fatal("an anonymous client was let in")
	}
	sub, err := nats.Connect(ps[2].clientURL, nats.UserInfo(creds.User, creds.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := make(chan *nats.Msg, 16)
	if _, err := sub.ChanSubscribe("orders.>", got); err != nil {
		t.Fatal(err)
	}
	sub.Flush()
	pub, err := nats.Connect(ps[0].clientURL, nats.UserInfo(creds.User, creds.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	received := false
	for i := 0; i < 100 && !received; i++ { // interest crosses the route asynchronously
		pub.Publish("orders.new", []byte("order 1"))
		pub.Flush()
		select {
		case m := <-got:
			received = string(m.Data) == "order 1" && m.Subject == "orders.new"
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !received {
		t.Fatal("a message published on a never reached the subscriber on c")
	}

	sub.Close()
	pub.Close()

	// Clean stop of c: exit 0, and the others list it as left.
	ps[2].cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-ps[2].done:
		if err != nil {
			t.Errorf("c exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("c did not stop within 10s of SIGTERM")
	}
	waitFor(t, 5*time.Second, "a and b to list only a and b, with c left", func() bool {
		for _, p := range ps[:2] {
			st, err := status(p)
			if err != nil || !slices.Equal(st.Members, []string{"a", "b"}) {
				return false
			}
			for _, m := range st.MemberStates {
				if m.Name == "c" && m.State.String() != "left" {
					return false
				}
			}
		}
		return true
	})
	for _, p := range ps[:2] {
		p.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-p.done; err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
	}
}

// A host runs embedded-nats as its infrastructure service and batond
// beside it, both under the host's name and from one environment but for
// BATON_HTTP_ADDR and BATON_NATS_URL: three such hosts on loopback. The
// embedded-nats servers form the cluster; the batond processes embed no
// server, list the three of them as members and relay over it.
func TestBatondBesideEmbeddedNATS(t *testing.T) {
	nbin, bbin := build(t, "."), build(t, "../batond")
	port := freeUDP(t)
	names := []string{"a", "b", "c"}
	var servers, relays []*proc
	for _, name := range names {
		servers = append(servers, start(t, nbin, name, port, ""))
	}
	for i, name := range names {
		env := append(baseEnv(name, port),
			"BATON_HTTP_ADDR=127.0.0.1:0",
			"BATON_NATS_URL="+servers[i].clientURL,
			"BATON_MIN_NODES=3")
		relays = append(relays, launch(t, bbin, name, env))
	}

	type batondStatus struct {
		Members  []string `json:"members"`
		Hops     uint64   `json:"hops"`
		RouteURL string   `json:"route_url"`
	}
	began := time.Now()
	waitFor(t, 20*time.Second, "every batond to list a, b, c and relay", func() bool {
		for _, p := range relays {
			var st batondStatus
			if getJSON(p.httpURL, &st) != nil || !slices.Equal(st.Members, names) || st.Hops == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("three batond over three embedded-nats relayed %v after the last start", time.Since(began).Round(time.Millisecond))
	for _, p := range servers {
		if st, err := status(p); err != nil || !slices.Equal(st.Members, names) || len(st.Routes) != 2 {
			t.Errorf("embedded-nats %s: members %v routes %v (%v)", p.name, st.Members, st.Routes, err)
		}
	}
	var st batondStatus
	if getJSON(relays[0].httpURL, &st); st.RouteURL != "" {
		t.Errorf("batond a has a route listener of its own: %q", st.RouteURL)
	}

	for _, p := range append(relays, servers...) {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s exited with %v after SIGTERM", p.name, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not stop within 15s of SIGTERM", p.name)
		}
	}
}
