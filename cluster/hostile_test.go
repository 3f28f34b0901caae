package cluster

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A running node's discovery socket, fed over real UDP with random bytes
// of sizes up to the largest UDP payload, truncated and altered packets,
// announcements under another secret, cluster or protocol version, and a
// byte-exact replay: every packet is dropped and counted under its
// reason, each reason is logged at most once for the one sender, the
// route address named in the bad packets is never dialled, and the node
// goes on working.
func TestHostileDiscoveryPackets(t *testing.T) {
	// The bait: every bad packet names this address as its route.
	bait, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bait.Close()
	var dialled atomic.Int32
	go func() {
		for {
			c, err := bait.Accept()
			if err != nil {
				return // closed at the end of the test
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	baitURL := "nats-route://" + bait.Addr().String()

	var logs lockedBuffer
	cfg := testNodeConfig(t, "n1", freeUDPPort(t))
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n := startTestNode(t, cfg)

	mine, err := NewCodec(cfg.Secret, cfg.Cluster, nil)
	if err != nil {
		t.Fatal(err)
	}
	seal := func(c *Codec, a Announcement) []byte {
		t.Helper()
		p, err := c.Seal(a)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	intruder := Announcement{Node: "intruder", Boot: 7, Seq: 1, RouteURL: baitURL}
	good := seal(mine, intruder)

	var pkts [][]byte
	// Random bytes, of every size up to 64 and then of sizes around the
	// limits up to the largest UDP payload over IPv4.
	for _, size := range append(seq(0, 64), 127, 128, 255, 256, 1023, 1024, 1472, 1500, 4096, 9000, 32768, 65507) {
		p := make([]byte, size)
		rand.Read(p)
		pkts = append(pkts, p)
	}
	for i := range len(good) {
		pkts = append(pkts, good[:i]) // every truncation
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1 // the last byte of the AEAD tag
	otherSecret, _ := NewCodec("another-secret", cfg.Cluster, nil)
	otherCluster, _ := NewCodec(cfg.Secret, "another-cluster", nil)
	version := bytes.Clone(good)
	version[3] = ProtocolVersion + 1
	pkts = append(pkts, flipped, seal(otherSecret, intruder), seal(otherCluster, intruder), version)

	// A valid announcement from a node that names no bait, sent twice:
	// the second, byte for byte the same, is a replay.
	ghost := seal(mine, Announcement{Node: "ghost", Boot: 9, Seq: 1, RouteURL: "nats-route://127.0.0.1:1"})

	sender, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: cfg.DiscoveryPort}
	dropped := func() (sum uint64) {
		for r, c := range n.DiscoveryStats().Dropped {
			if r != "self" {
				sum += c
			}
		}
		return sum
	}
	// One at a time, each counted before the next, so that a full socket
	// buffer cannot lose one and make the sums below meaningless.
	send := func(p []byte, counted func() bool) {
		t.Helper()
		if _, err := sender.WriteTo(p, dst); err != nil {
			t.Fatalf("send %d bytes: %v", len(p), err)
		}
		waitFor(t, 2*time.Second, fmt.Sprintf("a %d-byte packet to be counted", len(p)), counted)
	}
	for _, p := range pkts {
		before := dropped()
		send(p, func() bool { return dropped() == before+1 })
	}
	accepted := n.DiscoveryStats().Accepted
	send(ghost, func() bool { return n.DiscoveryStats().Accepted == accepted+1 })
	before := dropped()
	send(ghost, func() bool { return dropped() == before+1 })

	st := n.DiscoveryStats()
	var byReason []string
	for r, c := range st.Dropped {
		if c > 0 && r != "self" {
			byReason = append(byReason, fmt.Sprintf("%s=%d", r, c))
		}
	}
	t.Logf("%d packets dropped: %s", dropped(), strings.Join(byReason, " "))
	for _, r := range []string{"auth", "foreign_cluster", "version", "replay", "short"} {
		if st.Dropped[r] == 0 {
			t.Errorf("no packet counted as %s", r)
		}
	}
	if got := dropped(); got != uint64(len(pkts)+1) {
		t.Errorf("%d packets counted as dropped, want %d", got, len(pkts)+1)
	}

	// At most one line per reason: all came from one sender.
	lines := strings.Count(logs.String(), "dropped discovery packet")
	reasons := 0
	for r, c := range st.Dropped {
		if c > 0 && r != "self" && r != "replay" {
			reasons++
		}
	}
	if lines > reasons {
		t.Errorf("%d log lines about dropped packets from one sender, want at most one per reason (%d)", lines, reasons)
	}

	// Nothing named in a bad packet is dialled, give the route loop a
	// few periods to prove it.
	time.Sleep(3 * cfg.AnnounceInterval)
	if d := dialled.Load(); d != 0 {
		t.Errorf("the address named in rejected packets was dialled %d times", d)
	}
	if alive := n.View().Alive; len(alive) != 1 || alive[0] != "n1" {
		t.Errorf("members after the flood: %v, want only n1", alive)
	}
	if strings.Contains(logs.String(), "intruder") {
		t.Errorf("a name from a rejected packet reached the log")
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}
