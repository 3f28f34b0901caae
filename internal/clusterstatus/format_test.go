package clusterstatus

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func status(t *testing.T, doc string) NodeStatus {
	t.Helper()
	var st NodeStatus
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// The table shows every node that answered with the state the asked
// node sees, its rate, the recent latency when there is one (else the
// one since start), routes and uptime; a silent node gets a row of
// dashes and a line naming who lists it and the subject it did not
// answer on; a member known to be dead gets a row with its state. The matrix puts row-to-column round trips in ms and notes
// every cell it could not fill.
func TestFormat(t *testing.T) {
	res := &Result{
		Via: "b",
		Nodes: []NodeStatus{
			status(t, `{"node":"a","members":["a","b","c"],"cluster":"home","version":"v1","uptime_seconds":3725.4,
				"leader":"a","routes":["b"],"rate":{"hops_per_second":18595.4},
				"latency":{"samples":9,"p50_us":70,"p99_us":200,"interval":{"samples":5,"p50_us":77.8,"p99_us":188.4}}}`),
			status(t, `{"node":"b","members":["a","b","c"],"cluster":"home","version":"v1","uptime_seconds":61,
				"leader":"a","routes":["a"],"rate":{"hops_per_second":0.4},
				"member_states":[{"name":"a","state":"alive"},{"name":"b","state":"alive"},{"name":"c","state":"suspect"},{"name":"d","state":"dead"}],
				"latency":{"samples":4,"p50_us":41.25,"p99_us":99.9}}`),
		},
		Missing: []string{"c"},
		RTT: map[string]map[string]Probe{
			"a": {"b": {Sent: 5, Answered: 5, MedianUS: 210}},
			"b": {"a": {Sent: 2, Answered: 1, MedianUS: 1500, Error: "no answer within 500ms"}},
		},
	}
	var out bytes.Buffer
	Format(&out, res, 2*time.Second)
	want := `cluster home: 2 node(s) answered via b, leader a

node    state  hops/s  p50 µs  p99 µs  routes  uptime  version
a       alive  18,595    77.8   188.4       1  1h2m5s       v1
b       alive       0    41.2    99.9       1    1m1s       v1
c     suspect       -       -       -       -       -        -
d        dead       -       -       -       -       -        -
c: listed alive by a, b, but no answer on baton.status within 2s

round-trip time in ms, row pings column (median of each pair's pings):
       a      b
a      -  0.210
b  1.500      -
b -> a: 1 of 2 pings answered: no answer within 500ms
`
	if got := out.String(); got != want {
		t.Fatalf("Format printed:\n%s\nwant:\n%s", got, want)
	}
}

// A node whose measurement failed gets "?" in its row and its reason
// once; a pair with no answered ping gets "x" and the probe's error.
func TestFormatMatrixErrors(t *testing.T) {
	res := &Result{
		Via:       "a",
		Nodes:     []NodeStatus{{Node: "a"}, {Node: "b"}, {Node: "c"}},
		RTT:       map[string]map[string]Probe{"a": {"b": {Sent: 1, Error: "no responder on baton.ping.b"}, "c": {Sent: 3, Answered: 3, MedianUS: 95}}},
		RTTErrors: map[string]string{"b": "no answer on baton.rtt.b within 3s", "c": "no answer on baton.rtt.c within 3s"},
	}
	var out bytes.Buffer
	Format(&out, res, time.Second)
	for _, want := range []string{
		"a  -  x  0.095\n",
		"b  ?  -      ?\n",
		"a -> b: no responder on baton.ping.b\n",
		"b: no answer on baton.rtt.b within 3s\nc: no answer on baton.rtt.c within 3s\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// A request to measure is a command to send traffic: nodes refuse any
// that asks for too much, or names something that is not a node.
func TestRTTRequestValidate(t *testing.T) {
	ok := RTTRequest{Targets: []string{"a", "b"}, Pings: 5, WithinMS: 2000}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	for name, r := range map[string]RTTRequest{
		"no targets":    {Pings: 5, WithinMS: 2000},
		"zero pings":    {Targets: []string{"a"}, WithinMS: 2000},
		"too many":      {Targets: []string{"a"}, Pings: MaxPings + 1, WithinMS: 2000},
		"no time":       {Targets: []string{"a"}, Pings: 1},
		"too long":      {Targets: []string{"a"}, Pings: 1, WithinMS: MaxWithin.Milliseconds() + 1},
		"wildcard name": {Targets: []string{"a", ">"}, Pings: 1, WithinMS: 100},
		"dotted name":   {Targets: []string{"a.b"}, Pings: 1, WithinMS: 100},
	} {
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, r)
		}
	}
}
