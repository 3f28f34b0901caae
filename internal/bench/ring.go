// Package bench measures baton against a floor: a raw TCP ring of its
// own, run in the same topology in the same benchmark run, so that every
// figure can be given as a ratio that survives a noisy, shared machine.
//
// The benchmark itself is BenchmarkCluster (make bench); this file is the
// ring node it starts as a separate process, and stats.go the arithmetic.
package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-relay/baton/internal/hist"
)

// RingConfig describes one node of the TCP ring.
type RingConfig struct {
	Listen string // where the previous node connects
	Next   string // the next node's Listen address
	Status string // HTTP address serving GET /status
	Inject int    // batons this node injects (one node of the ring)
	// Deadline bounds the node's whole life, so a lost process cannot
	// outlive the benchmark that started it.
	Deadline time.Duration
}

// The ring's wire format is one 8-byte big-endian word per baton: the id
// in the top 16 bits and the counter in the low 48. One write per hop,
// no batching: the cheapest relay a program can do over TCP.
const (
	idShift     = 48
	counterMask = 1<<idShift - 1
	maxRingIDs  = 1 << 16
)

// ringNode is one running ring node.
type ringNode struct {
	hops    atomic.Uint64
	latency hist.Histogram
	start   time.Time
	sent    [maxRingIDs]struct {
		counter uint64
		at      time.Duration
	}
}

// RunRing runs a ring node until ctx ends or its deadline passes.
func RunRing(ctx context.Context, cfg RingConfig) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	n := &ringNode{start: time.Now()}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("ring listen: %w", err)
	}
	defer ln.Close()
	stopStatus, err := n.serveStatus(cfg.Status)
	if err != nil {
		return err
	}
	defer stopStatus()

	next, err := dialRetry(ctx, cfg.Next)
	if err != nil {
		return err
	}
	defer next.Close()
	prev, err := acceptCtx(ctx, ln)
	if err != nil {
		return err
	}
	defer prev.Close()
	context.AfterFunc(ctx, func() { prev.Close(); next.Close() })

	var w [8]byte
	for id := range cfg.Inject {
		binary.BigEndian.PutUint64(w[:], uint64(id)<<idShift)
		if _, err := next.Write(w[:]); err != nil {
			return fmt.Errorf("ring inject: %w", err)
		}
	}
	err = n.relay(prev, next)
	// The benchmark stops ring nodes one by one, so a node sees its
	// neighbour hang up: that is the normal end of a ring.
	if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// relay is the whole hot loop: read a word, add one, write it on.
func (n *ringNode) relay(prev, next net.Conn) error {
	r := bufio.NewReaderSize(prev, 64<<10)
	var w [8]byte
	for {
		if _, err := io.ReadFull(r, w[:]); err != nil {
			return err
		}
		v := binary.BigEndian.Uint64(w[:])
		id, counter := v>>idShift, v&counterMask

		now := time.Since(n.start)
		if s := n.sent[id]; s.counter != 0 && counter > s.counter {
			n.latency.Record((now - s.at) / time.Duration(counter-s.counter))
		}
		counter++
		n.sent[id].counter, n.sent[id].at = counter, now

		binary.BigEndian.PutUint64(w[:], id<<idShift|counter&counterMask)
		if _, err := next.Write(w[:]); err != nil {
			return err
		}
		n.hops.Add(1)
	}
}

// ringStatus is the part of batond's /status that the benchmark reads;
// the ring serves the same shape so both are measured by the same code.
type ringStatus struct {
	Hops    uint64 `json:"hops"`
	Latency struct {
		Histogram map[int]uint64 `json:"histogram"`
	} `json:"latency"`
}

func (n *ringNode) serveStatus(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ring status listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		var st ringStatus
		st.Hops = n.hops.Load()
		st.Latency.Histogram = n.latency.Snapshot().Sparse()
		json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

func dialRetry(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ring dial %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func acceptCtx(ctx context.Context, ln net.Listener) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	c, err := ln.Accept()
	if err != nil {
		if ctx.Err() != nil {
			return nil, errors.Join(errors.New("ring accept: gave up"), ctx.Err())
		}
		return nil, fmt.Errorf("ring accept: %w", err)
	}
	return c, nil
}
