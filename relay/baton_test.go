package relay

import (
	"errors"
	"math"
	"strconv"
	"testing"
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
	for _, id := range []uint32{0, 7, MaxBatonID} {
		h := AppendHeader(nil, id)
		got, err := ParseHeader(h)
		if err != nil || got != id {
			t.Errorf("ParseHeader(%q) = %d, %v; want %d", h, got, err, id)
		}
	}
}

func TestParseHeaderRejects(t *testing.T) {
	for _, h := range []string{
		"",
		"NATS/1.0\r\n\r\n",
		"NATS/1.0\r\nBaton: \r\n\r\n",
		"NATS/1.0\r\nBaton: x\r\n\r\n",
		"NATS/1.0\r\nBaton: 2147483648\r\n\r\n", // above MaxBatonID
		"NATS/1.0\r\nBaton: 1\r\nOther: 2\r\n\r\n",
		"NATS/1.0 503\r\nBaton: 1\r\n\r\n",
	} {
		if id, err := ParseHeader([]byte(h)); err == nil {
			t.Errorf("ParseHeader(%q) = %d, want an error", h, id)
		}
	}
}
