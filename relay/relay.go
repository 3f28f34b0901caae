package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/hist"
	"github.com/baton-relay/baton/internal/natsproto"
)

// Config describes one node's relay.
type Config struct {
	Node     string
	Batons   int // batons the leader injects
	MinNodes int // alive members needed before injecting
	Strategy Strategy
	Leader   string // preferred leader; empty means the lowest alive name
	// Direct publishes batons straight to the receiving peer's server;
	// see direct.go. Off, every baton takes the route path.
	Direct bool
	// Settle is how long the set of alive members must stay unchanged
	// before the leader injects, so that nodes still joining do not each
	// see themselves as the lowest and inject too.
	Settle time.Duration
	// DownFor is how long a peer whose direct connection broke is not
	// chosen, unless a new connection to it succeeds first. Membership
	// declares a silent peer dead after its own timeout; this is for the
	// peer that visibly went away (its kernel reset the connection).
	DownFor time.Duration
	// NodePassword authenticates the relay's connections as
	// cluster.NodeUser; empty connects without a user.
	NodePassword string
	// LossTimeout is how long a baton may make no visible progress
	// before the leader injects it again (see progress.go). Zero turns
	// loss recovery off.
	LossTimeout time.Duration
	Logger      *slog.Logger
}

// Membership is what the relay needs from the cluster layer.
type Membership interface {
	View() *cluster.View
	// Changes signals a change of the alive set. The relay must be its
	// only reader.
	Changes() <-chan struct{}
}

// Dialer opens a raw connection to the NATS server, normally an
// in-process pipe to the embedded one.
type Dialer func() (net.Conn, error)

// Relay is one node's relay: a serve goroutine that reads batons from the
// node's own subject and passes each one on, plus a control goroutine
// that injects batons when this node is the leader and re-sends batons
// that were parked because no peer was alive.
//
// The serve goroutine is the whole hot path: it parses a baton, picks a
// peer and queues the next publish on the same connection, and writes its
// queue out once its input is drained (see natsproto). A hop costs no
// goroutine hand-off inside the relay and no allocation.
//
// Start begins both goroutines. Stop drains the subscription (batons
// already on their way here are still passed on), closes the connection
// and waits for both.
type Relay struct {
	cfg  Config
	m    Membership
	log  *slog.Logger
	conn *natsproto.Conn

	hot  *passer // used only by the serve goroutine
	ctrl *passer // used only by the control goroutine

	// direct holds the publish-only connections to peers' servers (see
	// direct.go), replaced whole by the control goroutine, which owns ds.
	direct atomic.Pointer[map[string]*natsproto.Conn]
	ds     *directSet
	// peers is the list batons may go to: the alive peers less those
	// whose connection just broke (direct.go). Replaced, never changed.
	peers atomic.Pointer[[]string]

	hops       atomic.Uint64
	bad        atomic.Uint64
	injected   atomic.Uint64
	fenced     atomic.Uint64 // copies of an older epoch dropped here
	duplicates atomic.Uint64 // copies of the current epoch behind one seen here
	lost       atomic.Uint64 // batons this node (as leader) found lost
	reinjected atomic.Uint64 // ... and injected again
	seen       atomic.Bool   // this node injected or received a baton

	// table is this node's highest known position of every baton;
	// progress.go explains how it drives loss recovery and fencing.
	table     *Table
	ctl       *natsproto.Conn // progress and epoch announcements
	reported  []Position      // last reported positions; control goroutine only
	reportBuf []byte          // control goroutine only
	nextFull  time.Time       // when to report every position; control goroutine only

	lossMu   sync.Mutex
	detector *LossDetector // guarded by lossMu; see recoverLost
	leading  atomic.Bool   // this node leads (injects and recovers)

	// latency holds per-hop latencies: when a baton comes back to this
	// node, the time since this node sent it divided by the hops it made
	// meanwhile. It needs no synchronised clocks: both ends of the
	// measurement are this node's monotonic clock.
	latency hist.Histogram
	start   time.Time  // origin of the monotonic stamps in sent
	sent    []sentMark // by baton id; only the serve goroutine uses it

	parkMu sync.Mutex
	parked []baton // batons waiting for a peer

	// epochs is, per baton, the highest epoch established here: announced
	// on baton.control, or seen in any node's progress report (which
	// only reports epochs that node accepted). held keeps copies of a
	// higher epoch until it is established, or drops them as
	// unannounced after the loss timeout.
	epochs      epochTable
	heldMu      sync.Mutex
	held        []heldBaton
	kick        chan struct{} // wakes the control goroutine to release held batons
	unannounced atomic.Uint64

	served   chan error    // the result of Serve
	broken   chan struct{} // closed when Serve has returned
	stop     chan struct{} // closed by Stop
	ctrlDone chan struct{} // closed when the control goroutine returns
	wg       sync.WaitGroup
	once     sync.Once
}

// sid is the relay connection's only subscription id.
const sid = 1

// baton is one baton in this node's hands.
type baton struct {
	id      uint32
	epoch   uint16
	counter uint64
}

// sentMark records when this node last sent a baton, and with which
// counter.
type sentMark struct {
	counter uint64
	at      time.Duration // since Relay.start
}

// maxTrackedIDs bounds the latency table: batons with higher ids are
// relayed as usual but not timed.
const maxTrackedIDs = 1 << 16

// Start connects, subscribes and starts the serve and control goroutines.
func Start(cfg Config, dial Dialer, m Membership) (*Relay, error) {
	r := &Relay{
		cfg:      cfg,
		m:        m,
		log:      cfg.Logger.With("component", "relay"),
		served:   make(chan error, 1),
		broken:   make(chan struct{}),
		stop:     make(chan struct{}),
		ctrlDone: make(chan struct{}),
		ds:       newDirectSet(),
		start:    time.Now(),
		table:    NewTable(cfg.Batons),
		reported: make([]Position, cfg.Batons),
		epochs:   newEpochTable(cfg.Batons),
		kick:     make(chan struct{}, 1),
	}
	r.direct.Store(&map[string]*natsproto.Conn{})
	r.peers.Store(&m.View().Peers)
	seed := rand.Uint64()
	r.hot = newPasser(r, rand.New(rand.NewPCG(seed, 1)))
	r.ctrl = newPasser(r, rand.New(rand.NewPCG(seed, 2)))

	var err error
	r.conn, err = r.handshake(dial, "-relay", func(c *natsproto.Conn) error {
		if err := c.Subscribe(Subject(cfg.Node), sid); err != nil {
			return fmt.Errorf("subscribe %s: %w", Subject(cfg.Node), err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.startControlConn(dial); err != nil {
		r.conn.Close()
		return nil, err
	}

	r.wg.Add(2)
	go r.serve()
	go r.control()
	return r, nil
}

func (r *Relay) serve() {
	defer r.wg.Done()
	defer close(r.broken)
	r.served <- r.conn.Serve(handler{r})
}

// Broken is closed when the relay's connection to its server has ended:
// by Stop, or, before it, because the server went away. The second can
// only happen with a server outside this process (BATON_NATS_URL); the
// daemon then stops, since a relay that takes no batons must not keep
// saying in its heartbeats that it does.
func (r *Relay) Broken() <-chan struct{} { return r.broken }

// handshake opens a connection to the local server and runs setup on it
// (its subscriptions). It tries a few times: with client users
// configured, every NATS config reload (the route manager's, as peers
// come and go) re-checks authorization and drops a client caught in the
// middle of its handshake or of its first subscriptions. Established
// connections are not affected.
func (r *Relay) handshake(dial Dialer, suffix string, setup func(*natsproto.Conn) error) (*natsproto.Conn, error) {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			r.log.Warn("relay connection failed; trying again", "conn", r.cfg.Node+suffix, "attempt", attempt, "err", err)
			time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
		}
		var nc net.Conn
		if nc, err = dial(); err != nil {
			continue
		}
		// A healthy handshake with the node's own server takes far less
		// than a second; one that a reload cut off may instead just stall
		// until the deadline, so the first tries give up sooner and the
		// later ones allow for a loaded machine.
		timeout := time.Duration(attempt+1) * time.Second
		var c *natsproto.Conn
		if c, err = natsproto.Handshake(nc, r.connectOptions(suffix, 0), timeout); err == nil {
			if err = setup(c); err == nil {
				return c, nil
			}
			c.Close()
			continue
		}
		nc.Close()
	}
	return nil, fmt.Errorf("relay connection%s: %w", suffix, err)
}

// connectOptions names a connection of this relay and gives it the
// node's credentials.
func (r *Relay) connectOptions(suffix string, writeTimeout time.Duration) natsproto.ConnectOptions {
	o := natsproto.ConnectOptions{Name: r.cfg.Node + suffix, WriteTimeout: writeTimeout}
	if r.cfg.NodePassword != "" {
		o.User, o.Pass = cluster.NodeUser, r.cfg.NodePassword
	}
	return o
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

// Fenced returns the number of stale copies (an older epoch) dropped here.
func (r *Relay) Fenced() uint64 { return r.fenced.Load() }

// Unannounced returns the number of batons of an epoch that was never
// established here (forged, or whose announcement was lost), dropped.
func (r *Relay) Unannounced() uint64 { return r.unannounced.Load() }

// Duplicates returns the number of copies of a baton's current epoch that
// arrived behind a position already seen here, and were dropped.
func (r *Relay) Duplicates() uint64 { return r.duplicates.Load() }

// Lost returns the number of batons this node, as leader, found lost.
func (r *Relay) Lost() uint64 { return r.lost.Load() }

// Reinjected returns the number of lost batons this node injected again.
func (r *Relay) Reinjected() uint64 { return r.reinjected.Load() }

// livePeers returns the peers batons may go to now.
func (r *Relay) livePeers() []string { return *r.peers.Load() }

// Moving returns how many batons the leader saw move within the loss
// timeout, and false on a node that is not leading (or not detecting).
func (r *Relay) Moving() (int, bool) {
	r.lossMu.Lock()
	defer r.lossMu.Unlock()
	if r.detector == nil || !r.leading.Load() {
		return 0, false
	}
	return r.detector.Moving(time.Now()), true
}

// Position returns the highest position of baton id known here.
func (r *Relay) Position(id uint32) Position { return r.table.Get(id) }

// HighestCounter returns the highest counter of any baton known here:
// with one baton, the figure the original relay sent to Datadog on every
// hop. It reads every baton's slot, so it is for once an interval, not
// for the hot path.
func (r *Relay) HighestCounter() uint64 {
	var highest uint64
	for id := range r.table.Len() {
		highest = max(highest, r.table.Get(uint32(id)).Counter())
	}
	return highest
}

// Latency returns the per-hop latencies measured so far.
func (r *Relay) Latency() hist.Snapshot { return r.latency.Snapshot() }

// Parked returns the number of batons waiting for a peer.
func (r *Relay) Parked() int {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	return len(r.parked)
}

// Stop drains the subscription, closes the connection and stops both
// goroutines. Batons that arrive while draining are passed on. If ctx
// ends first, the connection is closed without waiting for the drain.
// Safe to call twice.
func (r *Relay) Stop(ctx context.Context) error {
	var err error
	r.once.Do(func() {
		close(r.stop) // no more injections or releases

		if derr := r.conn.Drain(sid); derr != nil {
			err = fmt.Errorf("drain relay connection: %w", derr)
		}
		select {
		case serr := <-r.served:
			if !errors.Is(serr, natsproto.ErrDrained) && err == nil {
				err = fmt.Errorf("relay connection: %w", serr)
			}
		case <-ctx.Done():
			err = fmt.Errorf("drain relay connection: %w", ctx.Err())
		}
		r.conn.Close()
		<-r.ctrlDone // the control goroutine owns the direct set
		r.closeDirect()
		r.ctl.Close()
		r.wg.Wait()
	})
	return err
}

// handler adapts the relay to natsproto.Handler; its methods run on the
// serve goroutine.
type handler struct{ r *Relay }

func (h handler) Msg(m *natsproto.Msg) {
	r := h.r
	if m.Oversize {
		r.countBad("larger than any baton", nil)
		return
	}
	id, epoch, err := ParseHeader(m.Header)
	if err != nil {
		r.countBad("not a baton", err)
		return
	}
	n, err := ParseCounter(m.Data)
	if err != nil || n >= MaxCounter || int(id) >= r.table.Len() {
		r.countBad("not a baton", err)
		return
	}
	// Fencing: a copy of an epoch older than one this node knows was
	// replaced by the leader and dies here. A copy of the current epoch
	// behind a position already seen here can only be a second copy (a
	// single baton's counter only grows; nothing else raises the table
	// within an epoch), forged or duplicated, and dies too: so a baton's
	// counter never goes backwards at any node, and of two copies the one
	// behind dies at the first node the other has passed.
	// An epoch above 1 that no announcement or progress report has
	// established here is held until one does (see hold).
	if epoch > 1 && uint32(epoch) > r.epochs.get(id) {
		r.hold(baton{id: id, epoch: epoch, counter: n})
		return
	}
	p := Pos(epoch, n)
	if known := r.table.Raise(id, p); known > p {
		if known.Epoch() > epoch {
			r.fenced.Add(1)
		} else {
			r.duplicates.Add(1)
		}
		return
	}
	r.seen.Store(true)

	now := time.Since(r.start)
	r.timeReturn(id, n, now)
	b := baton{id: id, epoch: epoch, counter: n + 1}
	if r.hot.pass(b) {
		r.hops.Add(1)
		r.markSent(b, now)
	}
}

// timeReturn records the per-hop latency of a baton that came back.
func (r *Relay) timeReturn(id uint32, counter uint64, now time.Duration) {
	if int(id) >= len(r.sent) {
		return
	}
	s := r.sent[id]
	if s.counter == 0 || counter <= s.counter {
		return // never sent from here, or a counter that went backwards
	}
	r.latency.Record((now - s.at) / time.Duration(counter-s.counter))
}

func (r *Relay) markSent(b baton, now time.Duration) {
	if b.id >= maxTrackedIDs {
		return
	}
	if int(b.id) >= len(r.sent) {
		r.sent = append(r.sent, make([]sentMark, int(b.id)+1-len(r.sent))...)
	}
	r.sent[b.id] = sentMark{counter: b.counter, at: now}
}

func (h handler) ServerError(text string) {
	h.r.log.Error("nats server reported an error to the relay", "err", text)
}

// Drained writes out the batons queued on direct connections.
func (h handler) Drained() { h.r.hot.flushDirect() }

func (r *Relay) countBad(why string, err error) {
	if n := r.bad.Add(1); n%1000 == 1 {
		r.log.Warn("dropped message on the baton subject", "why", why, "err", err, "bad_total", n)
	}
}

// control injects batons when this node leads, releases parked ones and
// keeps the direct connections in step with the membership.
func (r *Relay) control() {
	defer r.wg.Done()
	defer close(r.ctrlDone)

	// Membership changes and dial results wake this loop at once; the
	// tick only paces the injection's settle check and redials, so it
	// can be slow enough to cost nothing on an idle node.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var inj injector
	var waitLogged int // relaying members when the wait was last logged

	for {
		select {
		case <-r.stop:
			return
		case res := <-r.ds.results:
			r.addDialed(res)
			r.updatePeers(r.m.View(), time.Now(), true)
			continue
		case name := <-r.ds.failed:
			r.markDown(name, time.Now().Add(r.cfg.DownFor))
			continue
		case <-r.m.Changes():
		case <-r.kick:
		case <-tick.C:
		}

		now := time.Now()
		v := r.m.View()
		if r.cfg.Direct {
			r.syncDirect(v, now)
		}
		r.updatePeers(v, now, false)
		if n := inj.decide(v, r.cfg, r.seen.Load(), now); n > 0 {
			r.inject(n, v)
		}
		r.logWaiting(v, &inj, &waitLogged)
		r.releaseParked()
		r.releaseHeld(now)
		r.report(now)
		r.recoverLost(v, inj.done, now)
	}
}

// logWaiting says, once per change in the number of relaying members,
// that the leader waits for BATON_MIN_NODES before injecting, so that an
// operator who sees no batons knows why.
func (r *Relay) logWaiting(v *cluster.View, inj *injector, logged *int) {
	if inj.done || Leader(v.Relays, r.cfg.Leader) != r.cfg.Node || len(v.Relays) >= r.cfg.MinNodes {
		return
	}
	if *logged != len(v.Relays) {
		*logged = len(v.Relays)
		r.log.Info("waiting for more nodes before injecting batons", "relaying", len(v.Relays), "min_nodes", r.cfg.MinNodes)
	}
}

func (r *Relay) inject(n int, v *cluster.View) {
	r.seen.Store(true)
	r.log.Info("injecting batons", "batons", n, "relays", v.Relays)
	for id := range n {
		b := baton{id: uint32(id), epoch: 1}
		r.epochs.raise(b.id, 1)
		r.table.Raise(b.id, Pos(b.epoch, b.counter))
		r.ctrl.pass(b)
		r.injected.Add(1)
	}
	r.flush()
}

// flush writes out what the control goroutine queued; the serve goroutine
// flushes its own publishes.
func (r *Relay) flush() {
	r.ctrl.flushDirect()
	if err := r.conn.Flush(); err != nil {
		r.log.Warn("relay connection write failed", "err", err)
	}
}

func (r *Relay) park(b baton) {
	r.parkMu.Lock()
	r.parked = append(r.parked, b)
	n := len(r.parked)
	r.parkMu.Unlock()
	r.log.Debug("holding a baton: no peer to pass it to", "baton", b.id, "held", n)
}

func (r *Relay) releaseParked() {
	if len(r.livePeers()) == 0 {
		return
	}
	r.parkMu.Lock()
	held := r.parked
	r.parked = nil
	r.parkMu.Unlock()

	for _, b := range held {
		r.ctrl.pass(b)
	}
	if len(held) > 0 {
		r.flush()
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
	case Leader(v.Relays, cfg.Leader) != cfg.Node,
		len(v.Relays) < cfg.MinNodes,
		now.Sub(j.epochSince) < cfg.Settle:
		return 0
	}
	j.done = true
	return cfg.Batons
}

// passer sends a baton to a chosen peer. Each goroutine that sends has its
// own, so the chooser, buffers and subject cache need no lock.
type passer struct {
	r        *Relay
	chooser  *Chooser
	hdr      []byte
	buf      []byte
	subjects map[string]string
	dirty    []*natsproto.Conn // direct connections with queued batons
}

func newPasser(r *Relay, rng *rand.Rand) *passer {
	return &passer{
		r:        r,
		chooser:  NewChooser(r.cfg.Strategy, r.cfg.Node, rng),
		hdr:      make([]byte, 0, len(headerPrefix)+16+len(headerSuffix)),
		buf:      make([]byte, 0, maxCounterDigits),
		subjects: make(map[string]string),
	}
}

// pass queues baton b for the next peer, or parks it when there is none.
// It reports whether the baton was queued. A write that fails later
// fails the whole connection, which Stop reports.
func (p *passer) pass(b baton) bool {
	peer, ok := p.chooser.Next(p.r.livePeers())
	if !ok {
		p.r.park(b)
		return false
	}

	subj, ok := p.subjects[peer]
	if !ok {
		subj = Subject(peer)
		p.subjects[peer] = subj
	}
	p.hdr = AppendHeader(p.hdr[:0], b.id, b.epoch)
	p.buf = AppendCounter(p.buf[:0], b.counter)
	if c, ok := p.r.directConns()[peer]; ok {
		c.Publish(subj, p.hdr, p.buf)
		p.markDirty(c)
	} else {
		p.r.conn.Publish(subj, p.hdr, p.buf)
	}
	return true
}

func (p *passer) markDirty(c *natsproto.Conn) {
	for _, d := range p.dirty {
		if d == c {
			return
		}
	}
	p.dirty = append(p.dirty, c)
}

// flushDirect writes out the direct connections this passer queued on. A
// failed write means the peer's server is gone; its reader notices too,
// and the control goroutine drops the connection.
func (p *passer) flushDirect() {
	for i, c := range p.dirty {
		if err := c.Flush(); err != nil {
			p.r.log.Debug("direct connection write failed", "err", err)
		}
		p.dirty[i] = nil
	}
	p.dirty = p.dirty[:0]
}
