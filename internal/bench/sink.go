package bench

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"
)

// StatsdSink is a DogStatsD listener that only counts what it receives:
// the stand-in for a Datadog agent when the benchmark compares the relay
// with metrics on and off. It has one reader goroutine; Close stops it.
type StatsdSink struct {
	conn    net.PacketConn
	packets atomic.Uint64
	lines   atomic.Uint64
	done    chan struct{}
}

// NewStatsdSink starts counting on conn, which the caller opened (inside
// a network namespace, or on loopback).
func NewStatsdSink(conn net.PacketConn) *StatsdSink {
	s := &StatsdSink{conn: conn, done: make(chan struct{})}
	go s.read()
	return s
}

func (s *StatsdSink) read() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || n == 0 {
			continue
		}
		s.packets.Add(1)
		s.lines.Add(uint64(bytes.Count(bytes.TrimRight(buf[:n], "\n"), []byte("\n")) + 1))
	}
}

// Addr returns the address the sink listens on.
func (s *StatsdSink) Addr() *net.UDPAddr { return s.conn.LocalAddr().(*net.UDPAddr) }

// Lines returns the number of metric lines received so far.
func (s *StatsdSink) Lines() uint64 { return s.lines.Load() }

// Packets returns the number of datagrams received so far.
func (s *StatsdSink) Packets() uint64 { return s.packets.Load() }

// Close stops the reader and waits for it. Safe to call twice.
func (s *StatsdSink) Close() {
	s.conn.Close()
	<-s.done
}
