package nstest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

func TestSuffix(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := Suffix()
		if len(s) != 6 {
			t.Fatalf("Suffix() = %q, want 6 hex digits", s)
		}
		seen[s] = true
	}
	if len(seen) < 95 {
		t.Errorf("100 suffixes, only %d distinct", len(seen))
	}
}

func TestDialRefusesHostNames(t *testing.T) {
	ns := &NS{Name: "not-used"}
	for _, addr := range []string{"localhost:80", "example.com:80", "127.0.0.1"} {
		if _, err := ns.DialContext(context.Background(), "tcp", addr); err == nil || !strings.Contains(err.Error(), "not ip:port") {
			t.Errorf("DialContext(%q) = %v, want a refusal before any namespace is entered", addr, err)
		}
	}
	if _, err := ns.DialContext(context.Background(), "udp", "127.0.0.1:9"); err == nil {
		t.Error("DialContext(udp) succeeded, want only TCP")
	}
}

// threadNetNS returns the network namespace of the calling OS thread.
func threadNetNS(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDoLeavesNoThreadBehind enters a namespace many times and then
// checks that every thread the runtime still uses is in the original one.
func TestDoLeavesNoThreadBehind(t *testing.T) {
	Require(t)
	runtime.LockOSThread()
	root := threadNetNS(t)
	runtime.UnlockOSThread()

	ns := NewNS(t, "bt-t")
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln, func(c net.Conn) { io.WriteString(c, "hello from the namespace\n") })

	var inside string
	if err := ns.Do(func() error {
		s, err := os.Readlink("/proc/thread-self/ns/net")
		inside = s
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == root {
		t.Fatalf("Do ran in the root namespace %s", root)
	}

	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := ns.DialContext(ctx, "tcp", ln.Addr().String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "hello from the namespace\n" {
			t.Fatalf("read %q, %v", b, err)
		}
	}

	// Sample threads on many goroutines at once: none may be inside.
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if threadNetNS(t) != root {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bad > 0 {
		t.Errorf("%d goroutines ran on a thread outside the root namespace", bad)
	}
}

// TestStar checks a two-node star: TCP between the nodes, multicast
// through the bridge, and nothing in the root namespace.
func TestStar(t *testing.T) {
	Require(t)
	s := NewStar(t, 2)
	a, b := s.Nodes[0], s.Nodes[1]

	for _, n := range s.Nodes {
		for _, dev := range []string{n.Dev, n.SwitchDev} {
			if err := exec.Command("ip", "link", "show", "dev", dev).Run(); err == nil {
				t.Errorf("interface %s exists in the root namespace", dev)
			}
		}
	}

	ln, err := b.NS.Listen("tcp", netip.AddrPortFrom(b.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln, func(net.Conn) {})
	dial := func() time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		c, err := a.NS.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial %s from %s: %v", ln.Addr(), a.NS.Name, err)
		}
		c.Close()
		return time.Since(start)
	}
	dial()

	// Multicast from a to b through the bridge, on an explicit interface.
	group := net.IPv4(239, 255, 77, 77)
	var recv net.PacketConn
	err = b.NS.Do(func() error {
		var err error
		recv, err = net.ListenPacket("udp4", "0.0.0.0:45999")
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(b.Dev)
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(recv).JoinGroup(ifi, &net.UDPAddr{IP: group})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	var send net.PacketConn
	err = a.NS.Do(func() error {
		var err error
		send, err = net.ListenPacket("udp4", a.Addr.String()+":0")
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(a.Dev)
		if err != nil {
			return err
		}
		p := ipv4.NewPacketConn(send)
		if err := p.SetMulticastInterface(ifi); err != nil {
			return err
		}
		return p.SetMulticastTTL(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		recv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := recv.ReadFrom(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for range 100 {
		if _, err := send.WriteTo([]byte("ping"), &net.UDPAddr{IP: group, Port: 45999}); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-got:
			if g != "ping" {
				t.Fatalf("multicast: %s", g)
			}
			break wait
		case <-tick.C:
		case <-deadline:
			t.Fatal("multicast from node 1 never reached node 2 through the bridge")
		}
	}

}

// TestCleanup checks that a namespace and its veth are gone after
// cleanup.
func TestCleanup(t *testing.T) {
	Require(t)
	var nodes []*NS
	t.Run("star", func(t *testing.T) {
		s := NewStar(t, 1)
		nodes = append(nodes, s.Switch, s.Nodes[0].NS)
	})
	for _, ns := range nodes {
		if ns.Exists() {
			t.Errorf("namespace %s still exists after cleanup", ns.Name)
		}
	}
}

// serve accepts until ln is closed, hands each connection to fn, then
// closes it.
func serve(ln net.Listener, fn func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fn(c)
		c.Close()
	}
}
