package bench

import (
	"net"
	"testing"
	"time"
)

// The sink counts the lines of every datagram, with or without a final
// newline, and stops on Close.
func TestStatsdSinkCountsLines(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewStatsdSink(c)
	defer s.Close()

	out, err := net.DialUDP("udp4", nil, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, p := range []string{"a:1|c\nb:2|g", "c:3|g\n", "d:4|c"} {
		if _, err := out.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Packets() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Packets() != 3 || s.Lines() != 4 {
		t.Errorf("sink counted %d packets, %d lines; want 3, 4", s.Packets(), s.Lines())
	}
	s.Close()
}
