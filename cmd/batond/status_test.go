package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/daemon"
)

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startCluster runs n daemons in this process, on loopback, with
// multicast discovery on lo, and waits until each relays batons.
func startCluster(t *testing.T, n int, secret string) []*daemon.Daemon {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()

	var ds []*daemon.Daemon
	for i := range n {
		cfg := daemon.Config{
			NodeName: fmt.Sprintf("n%d", i+1), ClusterName: "clitest", Secret: secret,
			MulticastAddr: "239.255.100.100", MulticastPort: port, MulticastIF: "lo", MulticastTTL: 1,
			HTTPAddr: daemon.HTTPOff, NATSListen: "127.0.0.1:0", RouteListen: "127.0.0.1:0", Advertise: "127.0.0.1",
			Batons: 1, MinNodes: n, PeerChoice: "random", Direct: true,
			AnnounceInterval: 200 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond,
			SuspectAfter: 300 * time.Millisecond, DeadAfter: 600 * time.Millisecond,
			RoutePing: 500 * time.Millisecond, RouteGrace: 5 * time.Second,
			LeaveGrace: 200 * time.Millisecond, LossTimeout: time.Second,
			MetricsInterval: time.Second,
			LogFormat:       "text", LogLevel: "info",
		}
		log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", cfg.NodeName)
		d, err := daemon.Start(cfg, log)
		if err != nil {
			t.Fatalf("start %s: %v", cfg.NodeName, err)
		}
		t.Cleanup(d.Close)
		ds = append(ds, d)
	}

	deadline := time.Now().Add(30 * time.Second)
	for _, d := range ds {
		for d.Status().Rate.HopsPerSecond <= 0 || len(d.Status().Members) != n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no hop rate or not %d members within 30s: %+v", d.Status().Node, n, d.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return ds
}

// `batond status`, given one node's client URL and the cluster's secret
// in BATON_SECRET, prints a row for every node and a round-trip time for
// every pair of distinct nodes.
func TestStatusCommand(t *testing.T) {
	const secret = "status-command-secret"
	ds := startCluster(t, 3, secret)
	t.Setenv("BATON_SECRET", secret)
	t.Setenv("BATON_CLUSTER_NAME", "clitest")

	var out, errOut bytes.Buffer
	url := ds[2].Node().Server().ClientURL()
	err := run(context.Background(), []string{"status", "-server", url, "-timeout", "5s", "-pings", "3"}, &out, &errOut)
	t.Logf("batond status printed:\n%s%s", out.String(), errOut.String())
	if err != nil {
		t.Fatal(err)
	}

	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "cluster clitest: 3 node(s) answered via n3, leader n1") {
		t.Errorf("heading %q", lines[0])
	}
	rows, matrix := tableRows(lines), matrixRows(lines)
	for _, name := range []string{"n1", "n2", "n3"} {
		f := rows[name]
		if len(f) != 8 || f[1] != "alive" || f[5] != "2" {
			t.Errorf("row %s: %q; want 8 columns, alive, 2 routes", name, f)
			continue
		}
		if rate, err := strconv.ParseFloat(strings.ReplaceAll(f[2], ",", ""), 64); err != nil || rate <= 0 {
			t.Errorf("row %s: hops/s %q, want a positive number", name, f[2])
		}
		cells := matrix[name]
		if len(cells) != 3 {
			t.Errorf("matrix row %s: %q, want 3 cells", name, cells)
			continue
		}
		for j, c := range cells {
			if fmt.Sprintf("n%d", j+1) == name {
				if c != "-" {
					t.Errorf("matrix %s to itself: %q, want -", name, c)
				}
				continue
			}
			ms, err := strconv.ParseFloat(c, 64)
			if err != nil || ms <= 0 || math.IsInf(ms, 0) || math.IsNaN(ms) {
				t.Errorf("matrix %s to n%d: %q, want a finite positive round trip", name, j+1, c)
			}
		}
	}
}

// tableRows returns the node table's rows by node name.
func tableRows(lines []string) map[string][]string {
	rows := make(map[string][]string)
	in := false
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "node":
			in = true
		case len(f) == 0:
			in = false
		case in:
			rows[f[0]] = f
		}
	}
	return rows
}

// matrixRows returns the round-trip matrix's cells by row name.
func matrixRows(lines []string) map[string][]string {
	rows := make(map[string][]string)
	for i, l := range lines {
		if !strings.HasPrefix(l, "round-trip time") {
			continue
		}
		for _, r := range lines[i+2:] {
			f := strings.Fields(r)
			if len(f) == 0 || strings.HasSuffix(f[0], ":") {
				break
			}
			rows[f[0]] = f[1:]
		}
	}
	return rows
}

// Wrong credentials, nothing listening, and bad flags each fail with an
// error that says which.
func TestStatusCommandErrors(t *testing.T) {
	ds := startCluster(t, 2, "the-right-secret")
	url := ds[0].Node().Server().ClientURL()
	t.Setenv("BATON_CLUSTER_NAME", "clitest")

	t.Setenv("BATON_SECRET", "a-wrong-secret")
	err := run(context.Background(), []string{"status", "-server", url}, new(bytes.Buffer), new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), `refused user "baton": BATON_SECRET or BATON_CLUSTER_NAME differ`) {
		t.Errorf("wrong secret: %v", err)
	}

	t.Setenv("BATON_SECRET", "the-right-secret")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + ln.Addr().String()
	ln.Close()
	err = run(context.Background(), []string{"status", "-server", closed}, new(bytes.Buffer), new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "cannot reach "+closed) {
		t.Errorf("nothing listening: %v", err)
	}

	for _, args := range [][]string{{"-pings", "101"}, {"-timeout", "0s"}, {"extra"}} {
		err := run(context.Background(), append([]string{"status"}, args...), new(bytes.Buffer), new(bytes.Buffer))
		if !errors.As(err, new(usageError)) {
			t.Errorf("status %v: %v, want a usage error", args, err)
		}
	}
}
