package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/clusterstatus"
	"github.com/nats-io/nats.go"
)

// statusClient connects to d's client port as the application user,
// as `batond status` does.
func statusClient(t *testing.T, d *Daemon) *nats.Conn {
	t.Helper()
	c := ClientCredentials(d.cfg)
	nc, err := clusterstatus.Connect(d.Node().Server().ClientURL(), c.User, c.Password, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// waitRelaying waits until every daemon has relayed batons and reports a
// hop rate for itself and for every member, from their heartbeats.
func waitRelaying(t *testing.T, ds []*Daemon) {
	t.Helper()
	waitFor(t, 20*time.Second, "every node to report hop rates for every member", func() bool {
		for _, d := range ds {
			st := d.Status()
			if st.Rate.HopsPerSecond <= 0 || len(st.MemberStates) != len(ds) {
				return false
			}
			for _, m := range st.MemberStates {
				if m.HopsPerSecond <= 0 {
					return false
				}
			}
		}
		return true
	})
}

// One connection to one node gives every node's status and a round-trip
// time for every ordered pair of nodes, each measured by request/reply
// pings through the nodes' own servers and routes.
func TestClusterStatusOverNATS(t *testing.T) {
	ds := startDaemons(t, 3, nil)
	waitRelaying(t, ds)

	// The same figures are in GET /status: the rate over about one
	// RateInterval, and the latency over it.
	st := getStatus(t, ds[0])
	if st.Rate.HopsPerSecond <= 0 || st.Rate.IntervalSeconds < 0.5 || st.Rate.IntervalSeconds > 5 {
		t.Errorf("/status rate %+v, want hops over about %v", st.Rate, RateInterval)
	}
	if st.Latency.Interval == nil || st.Latency.Interval.Seconds <= 0 {
		t.Errorf("/status latency.interval %+v, want the last interval's", st.Latency.Interval)
	}

	const pings = 3
	res, err := clusterstatus.Query(context.Background(), statusClient(t, ds[1]),
		clusterstatus.Options{Timeout: 5 * time.Second, Pings: pings})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range res.Nodes {
		names = append(names, st.Node)
		if st.Rate.HopsPerSecond <= 0 || st.UptimeSeconds <= 0 || len(st.Routes) != 2 || st.Leader != "n1" {
			t.Errorf("%s answered rate %v, uptime %v, routes %v, leader %q; want a rate, an uptime, 2 routes, leader n1",
				st.Node, st.Rate.HopsPerSecond, st.UptimeSeconds, st.Routes, st.Leader)
		}
	}
	if want := []string{"n1", "n2", "n3"}; !slices.Equal(names, want) || len(res.Missing) > 0 || res.Via != "n2" {
		t.Fatalf("answered %v, missing %v, via %q; want %v, none, n2", names, res.Missing, res.Via, want)
	}

	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			p, ok := res.RTT[from][to]
			if !ok || p.Answered != pings || p.MedianUS <= 0 || math.IsInf(p.MedianUS, 0) || p.MinUS > p.MedianUS || p.MedianUS > p.MaxUS {
				t.Errorf("%s -> %s: %+v (measured %v); want %d answered pings with a finite median", from, to, p, ok, pings)
			}
		}
	}
	if len(res.RTTErrors) > 0 {
		t.Errorf("measurement errors: %v", res.RTTErrors)
	}
	var out bytes.Buffer
	clusterstatus.Format(&out, res, 5*time.Second)
	t.Logf("batond status would print:\n%s", out.String())
}

// A node that is alive (it heartbeats) but does not answer is named,
// with the subject it did not answer on; the others still answer and
// measure each other.
func TestClusterStatusNamesASilentNode(t *testing.T) {
	ds := startDaemons(t, 3, nil)
	waitFor(t, 20*time.Second, "3 members everywhere", func() bool {
		for _, d := range ds {
			if len(d.Status().Members) != 3 {
				return false
			}
		}
		return true
	})
	ds[2].statusResp.Close()

	res, err := clusterstatus.Query(context.Background(), statusClient(t, ds[0]),
		clusterstatus.Options{Timeout: time.Second, Pings: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Nodes) != 2 || !slices.Equal(res.Missing, []string{"n3"}) {
		t.Fatalf("answered %d nodes, missing %v; want 2 and [n3]", len(res.Nodes), res.Missing)
	}
	if p := res.RTT["n1"]["n2"]; p.Answered != 1 {
		t.Errorf("n1 -> n2: %+v, want an answered ping", p)
	}
	var out bytes.Buffer
	clusterstatus.Format(&out, res, time.Second)
	want := "n3: listed alive by n1, n2, but no answer on baton.status within 1s"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output lacks %q:\n%s", want, out.String())
	}
}

// Wrong credentials, an address nothing listens on, and a NATS server
// that is not a baton node each give an error that says which.
func TestClusterStatusErrors(t *testing.T) {
	ds := startDaemons(t, 1, nil)
	url := ds[0].Node().Server().ClientURL()

	_, err := clusterstatus.Connect(url, cluster.ClientUser, "not-the-password", 5*time.Second)
	if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "BATON_SECRET") {
		t.Errorf("bad password: %v; want an authorization error naming BATON_SECRET", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + ln.Addr().String()
	ln.Close()
	if _, err := clusterstatus.Connect(closed, "baton", "x", 5*time.Second); err == nil || !strings.Contains(err.Error(), "cannot reach "+closed) {
		t.Errorf("closed port: %v; want \"cannot reach %s\"", err, closed)
	}

	plain, err := cluster.StartServer(cluster.ServerConfig{
		Name: "plain", Cluster: "other",
		ClientHost: "127.0.0.1", ClientPort: -1, RouteHost: "127.0.0.1", RoutePort: -1,
		ClientPassword: "pw", SysPassword: "sys-pw",
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)
	nc, err := clusterstatus.Connect(plain.ClientURL(), cluster.ClientUser, "pw", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = clusterstatus.Query(context.Background(), nc, clusterstatus.Options{Timeout: 5 * time.Second})
	if !errors.Is(err, clusterstatus.ErrNoAnswer) || !strings.Contains(err.Error(), "nothing subscribes to baton.status") {
		t.Errorf("server without baton: %v; want ErrNoAnswer saying nothing subscribes", err)
	}
}

// A node refuses a measurement request that asks too much, and reports a
// target that does not exist as unanswered instead of waiting for it.
func TestRTTRequestsAreBounded(t *testing.T) {
	ds := startDaemons(t, 1, nil)
	nc := statusClient(t, ds[0])
	ask := func(req clusterstatus.RTTRequest) clusterstatus.RTTReply {
		t.Helper()
		b, _ := json.Marshal(req)
		m, err := nc.Request(clusterstatus.RTTSubjectPrefix+"n1", b, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r clusterstatus.RTTReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	if r := ask(clusterstatus.RTTRequest{Targets: []string{"n1"}, Pings: 1000, WithinMS: 1000}); !strings.Contains(r.Error, "pings") || r.RTT != nil {
		t.Errorf("1000 pings: %+v, want a refusal naming pings", r)
	}
	r := ask(clusterstatus.RTTRequest{Targets: []string{"n1", "ghost"}, Pings: 3, WithinMS: 5000})
	p := r.RTT["ghost"]
	if r.Error != "" || p.Sent != 1 || p.Answered != 0 || !strings.Contains(p.Error, "no responder on baton.ping.ghost") {
		t.Errorf("ghost target: %+v, want one unanswered ping and \"no responder\"", r)
	}
	if _, ok := r.RTT["n1"]; ok {
		t.Errorf("n1 measured a round trip to itself: %+v", r.RTT)
	}
}

// A member whose heartbeats stopped reports no rate: its last two
// heartbeats describe the past. The others' rates go on.
func TestStatusRateOfADeadMemberIsZero(t *testing.T) {
	ds := startDaemons(t, 3, nil)
	waitRelaying(t, ds)
	ds[2].Close()

	var n3 MemberStatus
	waitFor(t, 20*time.Second, "n1 to see n3 not alive", func() bool {
		for _, m := range ds[0].Status().MemberStates {
			if m.Name == "n3" {
				n3 = m
				return m.State != cluster.StateAlive
			}
		}
		return false
	})
	if n3.HopsPerSecond != 0 {
		t.Errorf("n3 is %v with a rate of %v hops/s, want 0", n3.State, n3.HopsPerSecond)
	}
	waitFor(t, 20*time.Second, "n1 to report a rate for n2", func() bool {
		for _, m := range ds[0].Status().MemberStates {
			if m.Name == "n2" {
				return m.HopsPerSecond > 0
			}
		}
		return false
	})
}
