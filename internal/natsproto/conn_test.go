package natsproto

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// These tests speak to a real embedded NATS server, and use the official
// client as the other party.

func startServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func dial(t *testing.T, s *server.Server) *Conn {
	t.Helper()
	nc, err := s.InProcessConn()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Handshake(nc, ConnectOptions{Name: "test"}, 5*time.Second)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder keeps copies of what a Serve loop saw.
type recorder struct {
	mu      sync.Mutex
	msgs    []Msg
	errs    []string
	drained int
	onMsg   func(m *Msg)
}

func (r *recorder) Msg(m *Msg) {
	r.mu.Lock()
	r.msgs = append(r.msgs, Msg{
		Subject:  bytes.Clone(m.Subject),
		Reply:    bytes.Clone(m.Reply),
		Header:   bytes.Clone(m.Header),
		Data:     bytes.Clone(m.Data),
		Oversize: m.Oversize,
	})
	r.mu.Unlock()
	if r.onMsg != nil {
		r.onMsg(m)
	}
}

func (r *recorder) ServerError(text string) {
	r.mu.Lock()
	r.errs = append(r.errs, text)
	r.mu.Unlock()
}

func (r *recorder) Drained() {
	r.mu.Lock()
	r.drained++
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func officialClient(t *testing.T, s *server.Server) *nats.Conn {
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Messages with and without reply subjects and headers arrive intact.
func TestServeReceivesEveryMessageForm(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	if err := c.Subscribe("in.>", 1); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	go c.Serve(rec)

	nc := officialClient(t, s)
	nc.Publish("in.plain", []byte("42"))
	nc.PublishRequest("in.reply", "answer.here", []byte("with reply"))
	m := nats.NewMsg("in.hdr")
	m.Header.Set("Baton", "7")
	m.Data = []byte("with header")
	nc.PublishMsg(m)
	nc.Publish("in.empty", nil)
	nc.Flush()

	waitFor(t, "four messages", func() bool { return rec.count() == 4 })
	got := rec.msgs
	check := func(i int, subj, reply, data string) {
		t.Helper()
		if string(got[i].Subject) != subj || string(got[i].Reply) != reply || string(got[i].Data) != data {
			t.Errorf("message %d: subject %q reply %q data %q; want %q %q %q",
				i, got[i].Subject, got[i].Reply, got[i].Data, subj, reply, data)
		}
	}
	check(0, "in.plain", "", "42")
	check(1, "in.reply", "answer.here", "with reply")
	check(2, "in.hdr", "", "with header")
	check(3, "in.empty", "", "")
	if !strings.Contains(string(got[2].Header), "Baton: 7") {
		t.Errorf("header block %q lacks the header", got[2].Header)
	}
}

// What a handler publishes while serving reaches the official client,
// without any explicit flush: Serve writes once its input is drained.
func TestPublishFromHandlerIsFlushedWhenDrained(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	c.Subscribe("ping", 1)
	rec := &recorder{onMsg: func(m *Msg) { c.Publish("pong", nil, m.Data) }}
	go c.Serve(rec)

	nc := officialClient(t, s)
	sub, _ := nc.SubscribeSync("pong")
	nc.Flush()
	for i := range 100 {
		nc.Publish("ping", fmt.Appendf(nil, "%d", i))
	}
	for i := range 100 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("reply %d carries %q: order or content lost", i, m.Data)
		}
	}
}

// Publishing with a header block produces a message the official client
// reads as having that header.
func TestPublishWithHeader(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	nc := officialClient(t, s)
	sub, _ := nc.SubscribeSync("h")
	nc.Flush()

	c.Publish("h", []byte("NATS/1.0\r\nBaton: 3\r\n\r\n"), []byte("99"))
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Baton") != "3" || string(m.Data) != "99" {
		t.Errorf("got header %v data %q", m.Header, m.Data)
	}
}

// A message bigger than the read buffer is skipped and reported, and the
// connection goes on working.
func TestOversizeMessageIsSkipped(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	c.Subscribe("big", 1)
	rec := &recorder{}
	go c.Serve(rec)

	nc := officialClient(t, s)
	nc.Publish("big", bytes.Repeat([]byte("x"), readBufSize+100))
	nc.Publish("big", []byte("small"))
	nc.Flush()
	waitFor(t, "both messages", func() bool { return rec.count() == 2 })
	if !rec.msgs[0].Oversize || rec.msgs[0].Data != nil {
		t.Errorf("big message not marked oversize: %+v", rec.msgs[0])
	}
	if string(rec.msgs[1].Data) != "small" {
		t.Errorf("message after the big one: %q", rec.msgs[1].Data)
	}
}

// Drain: messages already sent are still handled, then Serve returns
// ErrDrained and nothing more arrives.
func TestDrain(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	c.Subscribe("d", 1)
	rec := &recorder{}
	done := make(chan error, 1)
	go func() { done <- c.Serve(rec) }()

	nc := officialClient(t, s)
	for range 50 {
		nc.Publish("d", []byte("x"))
	}
	nc.Flush()
	waitFor(t, "the messages", func() bool { return rec.count() == 50 })

	if err := c.Drain(1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrDrained) {
			t.Fatalf("Serve returned %v, want ErrDrained", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Drain")
	}
	if rec.drained == 0 {
		t.Error("Drained hook never called")
	}
}

// The server's PINGs are answered, so an idle connection stays up.
func TestServerPingsAreAnswered(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		PingInterval: 20 * time.Millisecond, MaxPingsOut: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.ReadyForConnections(5 * time.Second)
	defer s.Shutdown()

	c := dial(t, s)
	done := make(chan error, 1)
	go func() { done <- c.Serve(&recorder{}) }()
	select {
	case err := <-done:
		t.Fatalf("connection closed while idle: %v", err)
	case <-time.After(300 * time.Millisecond): // 15 ping intervals
	}
	if n := s.NumClients(); n != 1 {
		t.Errorf("server has %d clients, want 1", n)
	}
}

func TestHandshakeRefused(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Username: "u", Password: "p",
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.ReadyForConnections(5 * time.Second)
	defer s.Shutdown()

	nc, _ := s.InProcessConn()
	if _, err := Handshake(nc, ConnectOptions{User: "u", Pass: "wrong"}, 5*time.Second); err == nil {
		t.Fatal("handshake with a wrong password succeeded")
	}
	nc, _ = s.InProcessConn()
	c, err := Handshake(nc, ConnectOptions{User: "u", Pass: "p"}, 5*time.Second)
	if err != nil {
		t.Fatalf("handshake with the right password: %v", err)
	}
	c.Close()
}

func TestSplitAndAtoi(t *testing.T) {
	var f [6][]byte
	n := splitFields([]byte("MSG  a.b 1  reply 12"), f[:])
	if n != 5 || string(f[1]) != "a.b" || string(f[3]) != "reply" {
		t.Errorf("split: %d %q", n, f[:n])
	}
	for in, ok := range map[string]bool{"0": true, "123": true, "": false, "-1": false, "1a": false, "1234567890": false} {
		if _, got := atoi([]byte(in)); got != ok {
			t.Errorf("atoi(%q) ok=%v, want %v", in, got, ok)
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	s, _ := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	s.Start()
	s.ReadyForConnections(5 * time.Second)
	defer s.Shutdown()
	nc, _ := s.InProcessConn()
	c, err := Handshake(nc, ConnectOptions{}, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	go c.Serve(&recorder{})
	data := []byte("12345678")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Publish("baton.relay.x", nil, data)
		if i%64 == 63 {
			c.Flush()
		}
	}
}
