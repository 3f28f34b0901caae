package bench

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses, as a process may have.
	line := "1234 (ip netns (x)) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 8 0 100 1000000 500 18446744073709551615"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 380*clockTick {
		t.Errorf("parseStatCPU = %v, %v; want %v", got, err, 380*clockTick)
	}
	if _, err := parseStatCPU([]byte("1234 (short) S 1")); err == nil {
		t.Error("short stat line accepted")
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tbatond\nVmPeak:\t  900000 kB\nVmHWM:\t   21504 kB\nVmRSS:\t   20000 kB\n"
	got, err := parseVmHWM(strings.NewReader(status))
	if err != nil || got != 21504*1024 {
		t.Errorf("parseVmHWM = %d, %v", got, err)
	}
	if _, err := parseVmHWM(strings.NewReader("Name:\tx\n")); err == nil {
		t.Error("status without VmHWM accepted")
	}
}

func TestSpreadOf(t *testing.T) {
	if s := SpreadOf([]float64{3, 1, 2}); s != (Spread{2, 1, 3}) {
		t.Errorf("odd: %+v", s)
	}
	if s := SpreadOf([]float64{4, 1, 2, 3}); s.Median != 2.5 {
		t.Errorf("even: %+v", s)
	}
	if Group(1234567) != "1,234,567" || Group(12) != "12" {
		t.Errorf("Group: %s %s", Group(1234567), Group(12))
	}
	if Ratio(1, 0) != 0 || Ratio(1, 2) != 0.5 {
		t.Error("Ratio")
	}
}

// The ring node relays: two nodes in this process on loopback pass one
// baton back and forth and measure its latency.
func TestRingRelays(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := freeAddr(t), freeAddr(t)
	sa, sb := freeAddr(t), freeAddr(t)
	errs := make(chan error, 2)
	go func() {
		errs <- RunRing(ctx, RingConfig{Listen: a, Next: b, Status: sa, Inject: 1, Deadline: 10 * time.Second})
	}()
	go func() {
		errs <- RunRing(ctx, RingConfig{Listen: b, Next: a, Status: sb, Deadline: 10 * time.Second})
	}()

	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := getRingStatus(sa)
		if err == nil && st.Hops > 100 && len(st.Latency.Histogram) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ring did not relay: %+v, %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	cancel() // a cancelled ring node stops without an error
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("ring node: %v", err)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func getRingStatus(addr string) (ringStatus, error) {
	var st ringStatus
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
