package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/nats-io/nats.go"
)

// Config describes one node's relay.
type Config struct {
	Node     string
	Batons   int // batons the leader injects
	MinNodes int // alive members needed before injecting
	Strategy Strategy
	Leader   string // preferred leader; empty means the lowest alive name
	// Settle is how long the set of alive members must stay unchanged
	// before the leader injects, so that nodes still joining do not each
	// see themselves as the lowest and inject too.
	Settle time.Duration
	Logger *slog.Logger
}

// Membership is what the relay needs from the cluster layer.
type Membership interface {
	View() *cluster.View
	// Changes signals a change of the alive set. The relay must be its
	// only reader.
	Changes() <-chan struct{}
}

// Dialer opens the relay's own NATS connection with the given options.
type Dialer func(opts ...nats.Option) (*nats.Conn, error)

// Relay is one node's relay: a subscription on the node's own subject
// whose handler passes every baton on, plus a control goroutine that
// injects batons when this node is the leader and re-sends batons that
// were parked because no peer was alive.
//
// Start begins both. Stop drains the subscription (batons already queued
// here are still passed on), closes the connection and waits for the
// control goroutine.
type Relay struct {
	cfg Config
	m   Membership
	log *slog.Logger
	nc  *nats.Conn
	sub *nats.Subscription

	hot  *passer // used only by the subscription's handler goroutine
	ctrl *passer // used only by the control goroutine

	hops     atomic.Uint64
	bad      atomic.Uint64
	injected atomic.Uint64
	seen     atomic.Bool // this node injected or received a baton

	parkMu sync.Mutex
	parked []uint64 // counters of batons waiting for a peer

	closed chan struct{} // closed by the connection's closed handler
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// Start connects, subscribes and starts the control goroutine.
func Start(cfg Config, dial Dialer, m Membership) (*Relay, error) {
	r := &Relay{
		cfg:    cfg,
		m:      m,
		log:    cfg.Logger.With("component", "relay"),
		closed: make(chan struct{}),
		stop:   make(chan struct{}),
	}
	seed := rand.Uint64()
	r.hot = newPasser(r, rand.New(rand.NewPCG(seed, 1)))
	r.ctrl = newPasser(r, rand.New(rand.NewPCG(seed, 2)))

	nc, err := dial(
		nats.ClosedHandler(func(*nats.Conn) { close(r.closed) }),
		nats.ErrorHandler(r.onAsyncError),
	)
	if err != nil {
		return nil, err
	}
	r.nc = nc

	r.sub, err = nc.Subscribe(Subject(cfg.Node), r.onBaton)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe %s: %w", Subject(cfg.Node), err)
	}
	// Batons are tiny and never pile up beyond the number in flight;
	// lifting the limits means a burst is never dropped as a slow
	// consumer, which would lose batons.
	if err := r.sub.SetPendingLimits(-1, -1); err != nil {
		nc.Close()
		return nil, fmt.Errorf("pending limits: %w", err)
	}

	r.wg.Add(1)
	go r.control()
	return r, nil
}

// Hops returns the number of batons this node has passed on.
func (r *Relay) Hops() uint64 { return r.hops.Load() }

// Seen reports whether this node has injected or received any baton.
func (r *Relay) Seen() bool { return r.seen.Load() }

// Bad returns the number of messages on the baton subject that were not
// batons.
func (r *Relay) Bad() uint64 { return r.bad.Load() }

// Injected returns the number of batons this node injected.
func (r *Relay) Injected() uint64 { return r.injected.Load() }

// Parked returns the number of batons waiting for a peer.
func (r *Relay) Parked() int {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	return len(r.parked)
}

// Stop drains and closes the connection, then stops the control
// goroutine. Batons that arrive while draining are passed on. Safe to
// call twice.
func (r *Relay) Stop(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		if derr := r.nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
			err = fmt.Errorf("drain relay connection: %w", derr)
		}
		select {
		case <-r.closed:
		case <-ctx.Done():
			r.nc.Close()
			err = fmt.Errorf("drain relay connection: %w", ctx.Err())
		}
		close(r.stop)
		r.wg.Wait()
	})
	return err
}

func (r *Relay) onBaton(m *nats.Msg) {
	n, err := ParseCounter(m.Data)
	if err != nil {
		if r.bad.Add(1)%1000 == 1 {
			r.log.Warn("dropped message that is not a baton", "subject", m.Subject, "err", err)
		}
		return
	}
	r.seen.Store(true)
	if r.hot.pass(n + 1) {
		r.hops.Add(1)
	}
}

func (r *Relay) onAsyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	r.log.Error("relay connection error", "err", err)
}

// control injects batons when this node leads and releases parked ones.
func (r *Relay) control() {
	defer r.wg.Done()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var inj injector

	for {
		select {
		case <-r.stop:
			return
		case <-r.m.Changes():
		case <-tick.C:
		}

		v := r.m.View()
		if n := inj.decide(v, r.cfg, r.seen.Load(), time.Now()); n > 0 {
			r.inject(n, v)
		}
		r.releaseParked()
	}
}

func (r *Relay) inject(n int, v *cluster.View) {
	r.seen.Store(true)
	r.log.Info("injecting batons", "batons", n, "alive", v.Alive)
	for range n {
		r.ctrl.pass(0)
		r.injected.Add(1)
	}
}

func (r *Relay) park(n uint64) {
	r.parkMu.Lock()
	r.parked = append(r.parked, n)
	r.parkMu.Unlock()
}

func (r *Relay) releaseParked() {
	if len(r.m.View().Peers) == 0 {
		return
	}
	r.parkMu.Lock()
	held := r.parked
	r.parked = nil
	r.parkMu.Unlock()

	for _, n := range held {
		r.ctrl.pass(n)
	}
}

// injector decides when the leader injects. It injects once per process:
// when this node is the leader, at least MinNodes members are alive, the
// alive set has been stable for Settle, and no member reports batons
// already in flight (a leader that takes over a running cluster must not
// add batons).
type injector struct {
	done       bool
	epoch      uint64
	epochSince time.Time
}

func (j *injector) decide(v *cluster.View, cfg Config, seen bool, now time.Time) int {
	if j.epochSince.IsZero() || v.Epoch != j.epoch {
		j.epoch, j.epochSince = v.Epoch, now
	}
	switch {
	case j.done:
		return 0
	case seen || v.Batons:
		j.done = true
		return 0
	case Leader(v.Alive, cfg.Leader) != cfg.Node,
		len(v.Alive) < cfg.MinNodes,
		now.Sub(j.epochSince) < cfg.Settle:
		return 0
	}
	j.done = true
	return cfg.Batons
}

// passer sends a baton to a chosen peer. Each goroutine that sends has its
// own, so the chooser, buffer and subject cache need no lock.
type passer struct {
	r        *Relay
	chooser  *Chooser
	buf      []byte
	subjects map[string]string
}

func newPasser(r *Relay, rng *rand.Rand) *passer {
	return &passer{
		r:        r,
		chooser:  NewChooser(r.cfg.Strategy, r.cfg.Node, rng),
		buf:      make([]byte, 0, maxCounterDigits),
		subjects: make(map[string]string),
	}
}

// pass sends counter n to the next peer, or parks it when there is none
// or the publish fails. It reports whether the baton was sent.
func (p *passer) pass(n uint64) bool {
	peer, ok := p.chooser.Next(p.r.m.View().Peers)
	if !ok {
		p.r.park(n)
		return false
	}

	subj, ok := p.subjects[peer]
	if !ok {
		subj = Subject(peer)
		p.subjects[peer] = subj
	}
	p.buf = AppendCounter(p.buf[:0], n)
	if err := p.r.nc.Publish(subj, p.buf); err != nil {
		p.r.park(n)
		return false
	}
	return true
}
