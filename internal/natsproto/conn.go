// Package natsproto is a minimal NATS client for one hot loop: the relay.
//
// nats.go, the official client, hands every message through two extra
// goroutines (a flusher for publishes, a dispatcher per subscription) and
// allocates per message. For a relay that receives one message and sends
// one message per hop, those hand-offs are most of the cost. Conn instead
// lets the goroutine that reads a message publish the next one into a
// buffer it writes out itself, once its input is drained: one goroutine,
// no allocation per message, and natural batching when many batons are in
// flight.
//
// It speaks the subset of the client protocol the relay needs (INFO,
// CONNECT, PING/PONG, SUB, UNSUB, PUB, HPUB, MSG, HMSG, +OK, -ERR) over any
// net.Conn, normally an in-process pipe to the embedded server. Everything
// else (reconnects, TLS, request/reply) is left to nats.go, which the rest
// of baton uses.
package natsproto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// ConnectOptions are sent in the CONNECT message.
type ConnectOptions struct {
	Name string
	User string
	Pass string
	// WriteTimeout bounds every write after the handshake; zero means
	// none. A peer that stops reading then fails the connection instead
	// of blocking the writer.
	WriteTimeout time.Duration
}

// Msg is one received message. Its slices point into the read buffer and
// are valid only until the handler returns.
type Msg struct {
	Subject []byte
	Reply   []byte
	Header  []byte // raw header block ("NATS/1.0\r\n...\r\n\r\n"), or nil
	Data    []byte
	// Oversize is set, with Data nil, for a message larger than the read
	// buffer; it was skipped.
	Oversize bool
}

// Handler receives messages and protocol errors on the Serve goroutine.
type Handler interface {
	// Msg handles one message. It may call Conn.Publish; what it
	// publishes is written once the input is drained.
	Msg(m *Msg)
	// ServerError reports a -ERR line from the server.
	ServerError(text string)
	// Drained is called when no more input is buffered, just before
	// Serve writes its own queue and waits for more: the moment to
	// flush anything else the handler queued.
	Drained()
}

// ErrDrained is returned by Serve after Drain completed.
var ErrDrained = errors.New("natsproto: drained")

// readBufSize bounds the message size Serve handles; batons are tens of
// bytes, so anything larger is garbage and is skipped.
const readBufSize = 64 << 10

// Conn is a connection after the handshake.
//
// Serve must run on exactly one goroutine; Publish, Flush, Subscribe and
// Drain may be called from any goroutine.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader

	// scratch holds the subject and reply of the message being handled;
	// only the Serve goroutine touches it.
	scratch []byte

	wtimeout time.Duration

	wmu      sync.Mutex // guards wbuf and werr; held while writing
	wbuf     []byte
	werr     error
	draining bool // guarded by wmu; Serve ends at the next PONG
}

// Handshake reads the server's INFO, sends CONNECT and a PING, and waits
// for the PONG that proves the server accepted the connection.
func Handshake(nc net.Conn, opts ConnectOptions, timeout time.Duration) (*Conn, error) {
	c := &Conn{
		nc:       nc,
		r:        bufio.NewReaderSize(nc, readBufSize),
		scratch:  make([]byte, 0, 512),
		wbuf:     make([]byte, 0, 4096),
		wtimeout: opts.WriteTimeout,
	}
	nc.SetDeadline(time.Now().Add(timeout))
	defer nc.SetDeadline(time.Time{})

	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("read INFO: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("INFO ")) {
		return nil, fmt.Errorf("expected INFO, got %q", trimCRLF(line))
	}

	connect, err := json.Marshal(struct {
		Verbose      bool   `json:"verbose"`
		Pedantic     bool   `json:"pedantic"`
		Name         string `json:"name,omitempty"`
		User         string `json:"user,omitempty"`
		Pass         string `json:"pass,omitempty"`
		Lang         string `json:"lang"`
		Version      string `json:"version"`
		Protocol     int    `json:"protocol"`
		Echo         bool   `json:"echo"`
		Headers      bool   `json:"headers"`
		NoResponders bool   `json:"no_responders"`
	}{Name: opts.Name, User: opts.User, Pass: opts.Pass, Lang: "go-baton", Version: "1", Protocol: 1, Headers: true})
	if err != nil {
		return nil, err
	}
	msg := append(append([]byte("CONNECT "), connect...), "\r\nPING\r\n"...)
	if _, err := nc.Write(msg); err != nil {
		return nil, fmt.Errorf("send CONNECT: %w", err)
	}

	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("await PONG: %w", err)
		}
		switch {
		case bytes.HasPrefix(line, []byte("PONG")):
			return c, nil
		case bytes.HasPrefix(line, []byte("-ERR")):
			return nil, fmt.Errorf("server refused connection: %s", trimCRLF(line[4:]))
		}
		// +OK, INFO updates, PING: nothing to do before the PONG.
	}
}

// Subscribe sends SUB and flushes it.
func (c *Conn) Subscribe(subject string, sid int) error {
	c.wmu.Lock()
	c.wbuf = append(c.wbuf, "SUB "...)
	c.wbuf = append(c.wbuf, subject...)
	c.wbuf = append(c.wbuf, ' ')
	c.wbuf = strconv.AppendInt(c.wbuf, int64(sid), 10)
	c.wbuf = append(c.wbuf, "\r\n"...)
	c.wmu.Unlock()
	return c.Flush()
}

// Publish queues a message; it is sent by the next Flush, or by Serve once
// its input is drained. header is a complete header block or nil.
func (c *Conn) Publish(subject string, header, data []byte) {
	c.wmu.Lock()
	b := c.wbuf
	if header == nil {
		b = append(b, "PUB "...)
		b = append(b, subject...)
		b = append(b, ' ')
	} else {
		b = append(b, "HPUB "...)
		b = append(b, subject...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(len(header)), 10)
		b = append(b, ' ')
	}
	b = strconv.AppendInt(b, int64(len(header)+len(data)), 10)
	b = append(b, "\r\n"...)
	b = append(b, header...)
	b = append(b, data...)
	b = append(b, "\r\n"...)
	c.wbuf = b
	c.wmu.Unlock()
}

// Flush writes everything queued.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if len(c.wbuf) == 0 {
		return nil
	}
	if c.wtimeout > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.wtimeout))
	}
	_, err := c.nc.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		c.werr = fmt.Errorf("write: %w", err)
	}
	return c.werr
}

// Drain unsubscribes sid and sends a PING. Serve goes on handling the
// messages already on their way, then returns ErrDrained at the PONG: the
// server answers in order, so nothing for sid can follow it.
func (c *Conn) Drain(sid int) error {
	c.wmu.Lock()
	c.draining = true
	c.wbuf = append(c.wbuf, "UNSUB "...)
	c.wbuf = strconv.AppendInt(c.wbuf, int64(sid), 10)
	c.wbuf = append(c.wbuf, "\r\nPING\r\n"...)
	err := c.flushLocked()
	c.wmu.Unlock()
	return err
}

// Close closes the connection; a running Serve returns.
func (c *Conn) Close() error { return c.nc.Close() }

// Serve reads and dispatches until the connection fails or a Drain
// completes. It answers the server's PINGs.
func (c *Conn) Serve(h Handler) error {
	var m Msg
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}

		switch {
		case hasOp(line, "MSG "), hasOp(line, "HMSG "):
			if err := c.readMsg(line, &m); err != nil {
				return err
			}
			h.Msg(&m)
		case hasOp(line, "PING"):
			c.wmu.Lock()
			c.wbuf = append(c.wbuf, "PONG\r\n"...)
			c.wmu.Unlock()
		case hasOp(line, "PONG"):
			c.wmu.Lock()
			done := c.draining
			c.wmu.Unlock()
			if done {
				h.Drained()
				return errors.Join(ErrDrained, c.Flush())
			}
		case hasOp(line, "-ERR"):
			h.ServerError(string(trimCRLF(line[4:])))
		}
		// +OK and INFO need nothing.

		if c.r.Buffered() == 0 {
			h.Drained()
			if err := c.Flush(); err != nil {
				return err
			}
		}
	}
}

// readMsg parses a MSG or HMSG control line and reads its body into m.
//
//	MSG <subject> <sid> [reply] <size>
//	HMSG <subject> <sid> [reply] <header size> <total size>
func (c *Conn) readMsg(line []byte, m *Msg) error {
	var f [6][]byte
	n := splitFields(trimCRLF(line), f[:])
	hdr := f[0][0] == 'H'

	*m = Msg{Subject: f[1]}
	var hsz, size int
	var ok bool
	switch {
	case !hdr && (n == 4 || n == 5):
		if n == 5 {
			m.Reply = f[3]
		}
		size, ok = atoi(f[n-1])
	case hdr && (n == 5 || n == 6):
		if n == 6 {
			m.Reply = f[3]
		}
		hsz, ok = atoi(f[n-2])
		if ok {
			size, ok = atoi(f[n-1])
		}
		ok = ok && hsz <= size
	}
	if !ok {
		return fmt.Errorf("bad message line %q", trimCRLF(line))
	}

	// The subject and reply point into the line, which the Peek below
	// may move; copy them into a scratch area first.
	m.Subject, m.Reply = c.keep(m.Subject, m.Reply)

	if size+2 > readBufSize {
		m.Subject, m.Reply, m.Oversize = nil, nil, true
		_, err := io.CopyN(io.Discard, c.r, int64(size+2))
		return err
	}
	body, err := c.r.Peek(size + 2)
	if err != nil {
		return fmt.Errorf("read message body: %w", err)
	}
	if hdr {
		m.Header = body[:hsz]
	}
	m.Data = body[hsz:size]
	_, err = c.r.Discard(size + 2)
	return err
}

// keep copies subject and reply into the scratch buffer. They are used
// only until the handler returns, so one buffer is reused.
func (c *Conn) keep(subject, reply []byte) ([]byte, []byte) {
	c.scratch = append(append(c.scratch[:0], subject...), reply...)
	return c.scratch[:len(subject)], c.scratch[len(subject):]
}

func hasOp(line []byte, op string) bool {
	if len(line) < len(op) {
		return false
	}
	for i := 0; i < len(op); i++ {
		a := line[i]
		if a >= 'a' && a <= 'z' {
			a -= 'a' - 'A'
		}
		if a != op[i] {
			return false
		}
	}
	return true
}

func splitFields(b []byte, out [][]byte) int {
	n := 0
	for len(b) > 0 && n < len(out) {
		for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
			b = b[1:]
		}
		i := 0
		for i < len(b) && b[i] != ' ' && b[i] != '\t' {
			i++
		}
		if i > 0 {
			out[n] = b[:i]
			n++
		}
		b = b[i:]
	}
	return n
}

func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func trimCRLF(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
