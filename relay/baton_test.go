package relay

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/baton-relay/baton/cluster"
)

func TestCounterRoundTrip(t *testing.T) {
	for _, n := range []uint64{0, 1, 9, 10, 12345, math.MaxUint64} {
		b := AppendCounter(nil, n)
		if string(b) != strconv.FormatUint(n, 10) {
			t.Errorf("AppendCounter(%d) = %q, want decimal text", n, b)
		}
		got, err := ParseCounter(b)
		if err != nil || got != n {
			t.Errorf("ParseCounter(%q) = %d, %v", b, got, err)
		}
	}
}

func TestParseCounterRejects(t *testing.T) {
	for _, in := range []string{
		"", " 1", "1 ", "-1", "+1", "01", "1.5", "0x10", "abc",
		"18446744073709551616", // MaxUint64 + 1
		"99999999999999999999", // 20 digits, overflows
		"123456789012345678901",
		"1\n",
	} {
		if n, err := ParseCounter([]byte(in)); err == nil || !errors.Is(err, ErrBadBaton) {
			t.Errorf("ParseCounter(%q) = %d, %v; want ErrBadBaton", in, n, err)
		}
	}
}

func TestCounterNoAllocs(t *testing.T) {
	buf := make([]byte, 0, maxCounterDigits)
	allocs := testing.AllocsPerRun(100, func() {
		n, _ := ParseCounter([]byte("123456"))
		buf = AppendCounter(buf[:0], n+1)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per parse and append, want 0", allocs)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, c := range []struct {
		id    uint32
		epoch uint16
	}{{0, 1}, {7, 2}, {MaxBatonID, MaxEpoch}} {
		h := AppendHeader(nil, c.id, c.epoch)
		id, epoch, err := ParseHeader(h)
		if err != nil || id != c.id || epoch != c.epoch {
			t.Errorf("ParseHeader(%q) = %d, %d, %v; want %d, %d", h, id, epoch, err, c.id, c.epoch)
		}
	}
	if h := string(AppendHeader(nil, 3, 1)); h != "NATS/1.0\r\nBaton: 3.1\r\n\r\n" {
		t.Errorf("header %q", h)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	for _, h := range []string{
		"",
		"NATS/1.0\r\n\r\n",
		"NATS/1.0\r\nBaton: \r\n\r\n",
		"NATS/1.0\r\nBaton: 3\r\n\r\n",   // no epoch
		"NATS/1.0\r\nBaton: 3.0\r\n\r\n", // epochs start at 1
		"NATS/1.0\r\nBaton: x.1\r\n\r\n",
		"NATS/1.0\r\nBaton: 3.65536\r\n\r\n",
		"NATS/1.0\r\nBaton: 2147483648.1\r\n\r\n", // above MaxBatonID
		"NATS/1.0\r\nBaton: 1.1\r\nOther: 2\r\n\r\n",
		"NATS/1.0 503\r\nBaton: 1.1\r\n\r\n",
	} {
		if id, e, err := ParseHeader([]byte(h)); err == nil {
			t.Errorf("ParseHeader(%q) = %d, %d; want an error", h, id, e)
		}
	}
}

// The cluster layer keeps the client user from publishing loss-recovery
// traffic; its list must name this package's subjects.
func TestNodeOnlySubjectsCoverRecovery(t *testing.T) {
	for _, want := range []string{ProgressPrefix + ">", ControlSubject} {
		if !slices.Contains(cluster.NodeOnlySubjects, want) {
			t.Errorf("cluster.NodeOnlySubjects %v lacks %s", cluster.NodeOnlySubjects, want)
		}
	}
}
