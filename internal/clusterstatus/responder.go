package clusterstatus

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// pingTimeout bounds one ping. A peer that does not answer within it is
// reported as not answering and not pinged again in that measurement, so
// one dead peer cannot eat the time the others need.
const pingTimeout = 500 * time.Millisecond

// Responder answers a node's status, ping and RTT requests.
//
// Serve subscribes; nats.go runs each subscription's handler on a
// goroutine of its own, owned by the connection. Close unsubscribes, closes
// the connection and waits for any handler still running (an RTT
// measurement ends within its request's bound, or at once when the
// connection closes). Safe to call twice.
type Responder struct {
	nc     *nats.Conn
	node   string
	status func() any
	log    *slog.Logger

	mu      sync.Mutex // guards closed and the wg.Add that follows it
	closed  bool
	running sync.WaitGroup
}

// Serve answers for node on nc, which the Responder owns from now on.
// status returns the node's status document (JSON-encoded per request).
// On error nc is closed.
func Serve(nc *nats.Conn, node string, status func() any, log *slog.Logger) (*Responder, error) {
	r := &Responder{nc: nc, node: node, status: status, log: log}
	subs := []struct {
		subject string
		handle  nats.MsgHandler
	}{
		{StatusSubject, r.onStatus},
		{StatusSubjectPrefix + node, r.onStatus},
		{PingSubjectPrefix + node, r.onPing},
		{RTTSubjectPrefix + node, r.onRTT},
	}
	for _, s := range subs {
		if _, err := nc.Subscribe(s.subject, r.guard(s.handle)); err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", s.subject, err)
		}
	}
	// The subscriptions are in place at the server before Serve returns,
	// so an asker that learns of this node right after gets an answer.
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("status subscriptions: %w", err)
	}
	return r, nil
}

// guard runs h unless the Responder is closing, and lets Close wait for it.
func (r *Responder) guard(h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		r.running.Add(1)
		r.mu.Unlock()
		defer r.running.Done()
		h(m)
	}
}

// Close stops answering; see Responder.
func (r *Responder) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.nc.Close()
	r.running.Wait()
}

func (r *Responder) onStatus(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	b, err := json.Marshal(r.status())
	if err != nil {
		r.log.Warn("cannot encode status", "err", err)
		return
	}
	m.Respond(b)
}

func (r *Responder) onPing(m *nats.Msg) {
	if m.Reply != "" {
		m.Respond(nil)
	}
}

func (r *Responder) onRTT(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	reply := RTTReply{Node: r.node}
	var req RTTRequest
	err := json.Unmarshal(m.Data, &req)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		reply.Error = "bad rtt request: " + err.Error()
	} else {
		reply.RTT = r.measure(req)
	}
	b, _ := json.Marshal(reply)
	m.Respond(b)
}

// measure pings each target in turn, Pings times, within the request's
// bound. Targets are pinged one after another, not at once, so that the
// pings do not queue behind each other and inflate what they measure.
func (r *Responder) measure(req RTTRequest) map[string]Probe {
	deadline := time.Now().Add(time.Duration(req.WithinMS) * time.Millisecond)
	out := make(map[string]Probe, len(req.Targets))
	for _, target := range req.Targets {
		if target == r.node {
			continue
		}
		out[target] = r.probe(target, req.Pings, deadline)
	}
	return out
}

func (r *Responder) probe(target string, pings int, deadline time.Time) Probe {
	var p Probe
	rtts := make([]time.Duration, 0, pings)
	for range pings {
		left := time.Until(deadline)
		if left <= 0 {
			p.Error = "out of time (the request's within_ms)"
			break
		}
		wait := min(left, pingTimeout)
		p.Sent++
		start := time.Now()
		_, err := r.nc.Request(PingSubjectPrefix+target, nil, wait)
		if err != nil {
			p.Error = pingError(target, wait, err)
			break
		}
		rtts = append(rtts, time.Since(start))
	}
	p.Answered = len(rtts)
	if len(rtts) > 0 {
		slices.Sort(rtts)
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		p.MinUS, p.MaxUS = us(rtts[0]), us(rtts[len(rtts)-1])
		p.MedianUS = us(median(rtts))
	}
	return p
}

func pingError(target string, wait time.Duration, err error) string {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return "no responder on " + PingSubjectPrefix + target + " (not running, or not routed to)"
	case errors.Is(err, nats.ErrTimeout):
		return fmt.Sprintf("no answer within %v", wait)
	}
	return err.Error()
}

// median of sorted durations.
func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
