package relay

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/natsproto"
)

// staticMembership is a membership that never changes.
type staticMembership struct {
	v  *cluster.View
	ch chan struct{}
}

func (s staticMembership) View() *cluster.View      { return s.v }
func (s staticMembership) Changes() <-chan struct{} { return s.ch }

// discardServer is the far end of a pipe that answers the handshake like
// a NATS server and then throws away everything it is sent, so a test
// sees only the relay's own work.
func discardServer() (net.Conn, error) {
	client, srv := net.Pipe()
	go func() {
		defer srv.Close()
		srv.Write([]byte("INFO {}\r\n"))
		r := bufio.NewReader(srv)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "PING\r\n" {
				srv.Write([]byte("PONG\r\n"))
				break
			}
		}
		io.Copy(io.Discard, r)
	}()
	return client, nil
}

func hopRelay(tb testing.TB, s Strategy) (*Relay, handler) {
	tb.Helper()
	m := staticMembership{
		v: &cluster.View{
			Self:  "a",
			Alive: []string{"a", "b", "c", "d"},
			Peers: []string{"b", "c", "d"},
		},
		ch: make(chan struct{}),
	}
	r, err := Start(Config{
		Node:     "a",
		Batons:   8,
		MinNodes: 99, // never inject
		Strategy: s,
		Logger:   slog.New(slog.DiscardHandler),
	}, discardServer, m)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// The discard server never answers the drain's PING; give up at once.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		r.Stop(ctx)
	})
	return r, handler{r}
}

// A hop in the steady state allocates nothing: parse the header and
// counter, time the return, choose a peer, encode, queue and write.
func TestHopDoesNotAllocate(t *testing.T) {
	for _, s := range []Strategy{Random, Shuffle, Ring} {
		r, h := hopRelay(t, s)
		msg := &natsproto.Msg{Header: AppendHeader(nil, 3, 1), Data: []byte("12345")}
		counter := uint64(12345)
		hop := func() {
			counter += 4
			msg.Data = AppendCounter(msg.Data[:0], counter)
			h.Msg(msg)
			h.Drained()
			r.conn.Flush()
		}
		for range 100 {
			hop() // warm up buffers and caches
		}
		if allocs := testing.AllocsPerRun(2000, hop); allocs != 0 {
			t.Errorf("%v: %v allocations per hop, want 0", s, allocs)
		}
		if r.Hops() < 2100 {
			t.Errorf("%v: %d hops counted", s, r.Hops())
		}
	}
}

func BenchmarkHop(b *testing.B) {
	r, h := hopRelay(b, Random)
	msg := &natsproto.Msg{Header: AppendHeader(nil, 3, 1), Data: make([]byte, 0, 20)}
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		msg.Data = AppendCounter(msg.Data[:0], i)
		h.Msg(msg)
		if i%64 == 63 { // as with 64 batons in flight
			h.Drained()
			r.conn.Flush()
		}
	}
}
