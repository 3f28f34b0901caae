package metrics

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The DD_* variables are read as the Datadog library reads them (the URL
// wins over the host; the port defaults to 8125), and a value the
// library would silently ignore or reject is an error naming it.
func TestDogStatsDTarget(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    string
		errName string
	}{
		{env: nil, want: ""},
		{env: map[string]string{EnvAgentHost: "10.1.2.3"}, want: "udp://10.1.2.3:8125"},
		{env: map[string]string{EnvAgentHost: "agent.lan", EnvPort: "9125"}, want: "udp://agent.lan:9125"},
		{env: map[string]string{EnvAgentHost: "127.0.0.1:7000"}, want: "udp://127.0.0.1:7000"},
		{env: map[string]string{EnvAgentHost: "unix:///run/dsd.sock"}, want: "unix:///run/dsd.sock"},
		{env: map[string]string{EnvURL: "udp://127.0.0.1:9999", EnvAgentHost: "10.0.0.1"}, want: "udp://127.0.0.1:9999"},
		{env: map[string]string{EnvURL: "udp://agent"}, want: "udp://agent:8125"},
		{env: map[string]string{EnvURL: "unix:///var/run/datadog/dsd.socket"}, want: "unix:///var/run/datadog/dsd.socket"},
		{env: map[string]string{EnvURL: "http://agent:8125"}, errName: EnvURL},
		{env: map[string]string{EnvURL: "udp://"}, errName: EnvURL},
		{env: map[string]string{EnvURL: "::bad"}, errName: EnvURL},
		{env: map[string]string{EnvAgentHost: "agent", EnvPort: "0"}, errName: EnvPort},
		{env: map[string]string{EnvAgentHost: "agent", EnvPort: "08125"}, errName: EnvPort},
		{env: map[string]string{EnvAgentHost: "agent", EnvPort: "dsd"}, errName: EnvPort},
		{env: map[string]string{EnvPort: "8125"}, errName: EnvAgentHost},
		{env: map[string]string{EnvAgentHost: "a:b:c"}, errName: EnvAgentHost},
	}
	for _, tt := range tests {
		got, err := DogStatsDTarget(func(name string) string { return tt.env[name] })
		switch {
		case tt.errName != "" && (err == nil || !strings.Contains(err.Error(), tt.errName)):
			t.Errorf("env %v: %q, %v; want an error naming %s", tt.env, got, err, tt.errName)
		case tt.errName == "" && (err != nil || got != tt.want):
			t.Errorf("env %v: %q, %v; want %q", tt.env, got, err, tt.want)
		}
	}
}

// statsdSink is a real DogStatsD listener on loopback that keeps every
// line it receives.
type statsdSink struct {
	conn  net.PacketConn
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func newStatsdSink(t *testing.T) *statsdSink {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &statsdSink{conn: c, done: make(chan struct{})}
	go s.read()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *statsdSink) read() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed at cleanup
		}
		s.mu.Lock()
		for _, l := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
			s.lines = append(s.lines, l)
		}
		s.mu.Unlock()
	}
}

func (s *statsdSink) port() string {
	return strings.TrimPrefix(s.conn.LocalAddr().String(), "127.0.0.1:")
}

func (s *statsdSink) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// clearDD sets the library's variables for one test: only the given
// ones, with origin detection off so that no container id is appended.
func clearDD(t *testing.T, set map[string]string) {
	for _, name := range []string{EnvAgentHost, EnvPort, EnvURL, "DD_ENV", "DD_SERVICE", "DD_VERSION",
		"DD_ENTITY_ID", "DD_EXTERNAL_ENV", "DD_TAGS"} {
		t.Setenv(name, "")
	}
	t.Setenv("DD_ORIGIN_DETECTION_ENABLED", "false")
	for k, v := range set {
		t.Setenv(k, v)
	}
}

// A Loop sends its interval's points to a real DogStatsD listener with
// the node's tags, once per interval, and on Stop the last, partial
// interval, so that the counts sent add up to the node's totals.
func TestLoopSendsDogStatsDLines(t *testing.T) {
	sink := newStatsdSink(t)
	clearDD(t, map[string]string{EnvURL: "udp://127.0.0.1:" + sink.port()})
	target, err := DogStatsDTarget(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	hops := uint64(0)
	read := func() Snapshot {
		mu.Lock()
		defer mu.Unlock()
		hops += 10 // ten hops between two reads
		return Snapshot{Hops: hops, Counter: hops, Members: [4]int{2, 0, 0, 0}, Leader: "a", IsLeader: true,
			DiscoveryDropped: map[string]uint64{"auth": 0}}
	}
	var logs bytes.Buffer
	l := StartLoop(LoopConfig{
		Interval: 50 * time.Millisecond, Read: read, Node: "a", Cluster: "c", DogStatsD: target,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	deadline := time.Now().Add(10 * time.Second)
	for countLines(sink.Lines(), "baton.hops:") < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	l.Stop()
	final := hops

	// The last interval's packet may still be on its way.
	var sum int
	for time.Now().Before(deadline) {
		sum = 0
		for _, line := range sink.Lines() {
			var n int
			if _, err := fmt.Sscanf(line, "baton.hops:%d|c|#host:a,cluster:c", &n); err == nil {
				sum += n
			}
		}
		if uint64(sum) == final-10 { // the first read is the baseline
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if uint64(sum) != final-10 {
		t.Errorf("baton.hops counts add up to %d, want %d (all hops after the baseline); lines:\n%s",
			sum, final-10, strings.Join(sink.Lines(), "\n"))
	}
	for _, want := range []string{
		"baton.members:2|g|#host:a,cluster:c,state:alive",
		"baton.is_leader:1|g|#host:a,cluster:c",
		"baton.discovery.dropped:0|c|#host:a,cluster:c,reason:auth",
	} {
		if countLines(sink.Lines(), want) == 0 {
			t.Errorf("no line %q among:\n%s", want, strings.Join(sink.Lines(), "\n"))
		}
	}
	if strings.Contains(logs.String(), "DogStatsD metrics off") || !strings.Contains(logs.String(), "DogStatsD metrics on") {
		t.Errorf("log does not say DogStatsD is on:\n%s", logs.String())
	}
}

func countLines(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// Without any DD_* variable, DogStatsD is off and the log says so once,
// not at every interval; the summary line comes every interval.
func TestLoopSaysOnceThatDogStatsDIsOff(t *testing.T) {
	var logs syncBuffer
	l := StartLoop(LoopConfig{
		Interval: 20 * time.Millisecond, Read: func() Snapshot { return Snapshot{} }, Node: "a", Cluster: "c",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), `msg=summary`) < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	l.Stop()
	if n := strings.Count(logs.String(), "DogStatsD metrics off"); n != 1 {
		t.Errorf("said %d times that DogStatsD is off, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "msg=summary"); n < 5 {
		t.Errorf("%d summary lines, want one per interval (5 or more):\n%s", n, logs.String())
	}
}

// An agent that is not listening makes writes fail (the kernel answers
// with port unreachable); the log says so once, not every interval.
func TestLoopReportsFailingWritesOnce(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close() // nobody listens there now
	clearDD(t, map[string]string{EnvURL: "udp://" + addr})

	var logs syncBuffer
	l := StartLoop(LoopConfig{
		Interval: 20 * time.Millisecond, Read: func() Snapshot { return Snapshot{} }, Node: "a", Cluster: "c",
		DogStatsD: "udp://" + addr, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), "msg=summary") < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	l.Stop()
	if n := strings.Count(logs.String(), "DogStatsD writes failing"); n != 1 {
		t.Errorf("reported failing writes %d times over 10 intervals, want once:\n%s", n, logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
