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

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "embedded-nats")
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/baton-relay/baton/internal/daemon.Version=test-1", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeTCP(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
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

// start runs one embedded-nats. Every address is on loopback and the
// discovery interface is lo: nothing leaves this host.
func start(t *testing.T, bin, name string, discoveryPort int) *proc {
	t.Helper()
	httpPort, clientPort := freeTCP(t), freeTCP(t)
	p := &proc{
		name:      name,
		httpURL:   fmt.Sprintf("http://127.0.0.1:%d/status", httpPort),
		clientURL: fmt.Sprintf("nats://127.0.0.1:%d", clientPort),
		done:      make(chan error, 1),
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"BATON_NODE_NAME=" + name,
		"BATON_CLUSTER_NAME=entest",
		"BATON_SECRET=" + secret,
		"BATON_MULTICAST_IF=lo",
		fmt.Sprintf("BATON_MULTICAST_PORT=%d", discoveryPort),
		fmt.Sprintf("BATON_HTTP_ADDR=127.0.0.1:%d", httpPort),
		fmt.Sprintf("BATON_NATS_LISTEN=127.0.0.1:%d", clientPort),
		"BATON_ROUTE_LISTEN=127.0.0.1:0",
		"BATON_ADVERTISE=127.0.0.1",
		"BATON_ANNOUNCE_INTERVAL=200ms",
		"BATON_HEARTBEAT_INTERVAL=100ms",
		"BATON_SUSPECT_AFTER=300ms",
		"BATON_DEAD_AFTER=600ms",
		// batond's: a shared env file may carry it; embedded-nats ignores it.
		"BATON_NATS_URL=nats://127.0.0.1:1",
	}
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
			t.Logf("%s log:\n%s", name, p.log())
		}
	})
	return p
}

func status(p *proc) (daemon.ClusterStatus, error) {
	var st daemon.ClusterStatus
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(p.httpURL)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
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
	bin := build(t)
	if out, err := exec.Command(bin, "version").Output(); err != nil || string(out) != "embedded-nats test-1\n" {
		t.Fatalf("embedded-nats version: %q, %v", out, err)
	}

	port := freeUDP(t)
	var ps []*proc
	for _, name := range []string{"a", "b", "c"} {
		ps = append(ps, start(t, bin, name, port))
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
