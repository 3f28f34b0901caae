package relay

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/natsproto"
)

// Direct connections.
//
// A baton published on this node's own server travels: relay -> server
// (client read loop) -> route write loop -> TCP -> peer server (route read
// loop) -> client write loop -> peer relay. Each arrow inside a process is
// a goroutine hand-off, and on a busy machine each hand-off can mean
// waking a thread; that, not computation, is what a hop costs.
//
// NATS lets a client publish to any server of the cluster, so the relay
// also keeps a client connection to every live peer's server and
// publishes each baton straight to the server of the peer that will
// receive it: relay -> TCP -> peer server -> peer relay. The subject and
// the payload are the same, the cluster still sees every baton (a
// `nats sub 'baton.>'` on any node gets it through the routes), and
// membership, routes and discovery are untouched. When no direct
// connection to a peer is up (yet), batons take the route path, which
// is slower but always there.

const (
	dialTimeout   = time.Second
	directTimeout = 2 * time.Second // handshake and every write
	redialAfter   = time.Second
)

// peerConn is a publish-only connection to a peer's server. Its reader
// goroutine answers the server's PINGs and closes done when the
// connection fails or is closed.
type peerConn struct {
	name    string
	url     string
	conn    *natsproto.Conn
	done    chan struct{}
	closing atomic.Bool // closed by us, not failed
}

// close closes the connection on purpose, so its end is not taken as the
// peer failing.
func (pc *peerConn) close() {
	pc.closing.Store(true)
	pc.conn.Close()
}

func (pc *peerConn) failed() bool {
	select {
	case <-pc.done:
		return true
	default:
		return false
	}
}

// dialResult is what a dial goroutine hands back to the control goroutine.
type dialResult struct {
	name, url string
	pc        *peerConn
	err       error
}

// directSet is owned by the control goroutine. It publishes the current
// connections to the serve goroutine through Relay.direct.
type directSet struct {
	conns    map[string]*peerConn
	dialing  map[string]bool
	lastDial map[string]time.Time
	results  chan dialResult
	cancel   context.CancelFunc
	ctx      context.Context

	// failed receives the name of a peer whose connection broke. A
	// crashed process's sockets are reset by its kernel at once, so this
	// is the earliest sign of a dead peer, seconds before membership
	// declares it dead; until then batons sent to it would be lost.
	failed chan string
	// down holds peers not to choose until the given time (or a new
	// direct connection, whichever comes first).
	down     map[string]time.Time
	lastView *cluster.View

	// retiring holds connections taken out of use but not yet closed:
	// the serve goroutine may have queued a baton on one just before it
	// was replaced, and flushes it a moment later. Closing at once would
	// lose that baton.
	retiring []retired
}

type retired struct {
	pc    *peerConn
	close time.Time
}

// retireAfter is how long a connection taken out of use stays open.
const retireAfter = 2 * time.Second

// retire takes pc out of use now and closes it after retireAfter (at
// once if it already failed).
func (ds *directSet) retire(pc *peerConn, now time.Time) {
	if pc.failed() {
		pc.close()
		return
	}
	ds.retiring = append(ds.retiring, retired{pc: pc, close: now.Add(retireAfter)})
}

// closeRetired closes the retired connections whose time has come.
func (ds *directSet) closeRetired(now time.Time) {
	keep := ds.retiring[:0]
	for _, r := range ds.retiring {
		if now.Before(r.close) {
			keep = append(keep, r)
			continue
		}
		r.pc.close()
	}
	clear(ds.retiring[len(keep):])
	ds.retiring = keep
}

func newDirectSet() *directSet {
	ctx, cancel := context.WithCancel(context.Background())
	return &directSet{
		conns:    make(map[string]*peerConn),
		dialing:  make(map[string]bool),
		lastDial: make(map[string]time.Time),
		results:  make(chan dialResult, 16),
		ctx:      ctx,
		cancel:   cancel,
		failed:   make(chan string, 16),
		down:     make(map[string]time.Time),
	}
}

// wantedPeers returns the client URLs of the alive peers that announce one.
func wantedPeers(v *cluster.View) map[string]string {
	want := make(map[string]string)
	for _, m := range v.Members {
		if m.State == cluster.StateAlive && m.Name != v.Self && m.ClientURL != "" {
			want[m.Name] = m.ClientURL
		}
	}
	return want
}

// syncDirect closes connections to peers that are gone, failed or moved,
// and starts dials to peers without one. It runs on the control goroutine.
func (r *Relay) syncDirect(v *cluster.View, now time.Time) {
	ds := r.ds
	want := wantedPeers(v)
	changed := false

	ds.closeRetired(now)
	for name, pc := range ds.conns {
		if url, ok := want[name]; !ok || url != pc.url || pc.failed() {
			ds.retire(pc, now)
			delete(ds.conns, name)
			changed = true
		}
	}
	for name, url := range want {
		if _, ok := ds.conns[name]; ok || ds.dialing[name] || now.Sub(ds.lastDial[name]) < redialAfter {
			continue
		}
		ds.dialing[name], ds.lastDial[name] = true, now
		r.wg.Add(1)
		go r.dialPeer(name, url)
	}
	if changed {
		r.publishDirect()
	}
}

// addDialed takes a finished dial. It runs on the control goroutine.
func (r *Relay) addDialed(res dialResult) {
	ds := r.ds
	delete(ds.dialing, res.name)
	if res.err != nil {
		r.log.Debug("no direct connection to peer; batons take the route", "peer", res.name, "url", res.url, "err", res.err)
		return
	}
	if old, ok := ds.conns[res.name]; ok {
		ds.retire(old, time.Now())
	}
	ds.conns[res.name] = res.pc
	delete(ds.down, res.name)
	r.publishDirect()
	r.log.Debug("direct connection to peer", "peer", res.name, "url", res.url)
}

func (r *Relay) publishDirect() {
	m := make(map[string]*natsproto.Conn, len(r.ds.conns))
	for name, pc := range r.ds.conns {
		m[name] = pc.conn
	}
	r.direct.Store(&m)
}

// dialPeer connects to a peer's server and starts the connection's reader.
func (r *Relay) dialPeer(name, url string) {
	defer r.wg.Done()

	pc, err := r.connectPeer(name, url)
	select {
	case r.ds.results <- dialResult{name: name, url: url, pc: pc, err: err}:
	case <-r.ds.ctx.Done():
		if pc != nil {
			pc.close()
		}
	}
}

func (r *Relay) connectPeer(name, url string) (*peerConn, error) {
	addr, ok := strings.CutPrefix(url, "nats://")
	if !ok {
		return nil, fmt.Errorf("not a nats:// URL: %q", url)
	}
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(r.ds.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := natsproto.Handshake(nc, r.connectOptions("-relay-to-"+name, directTimeout), directTimeout)
	if err != nil {
		nc.Close()
		return nil, err
	}

	pc := &peerConn{name: name, url: url, conn: conn, done: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(pc.done)
		// A dial that completes after closeDirect hands its connection to
		// a results channel nobody reads any more (it is buffered), so
		// closeDirect never sees it. Cancelling the direct set closes it
		// here instead; otherwise this reader, and Stop waiting for it,
		// would last as long as the peer's server.
		defer context.AfterFunc(r.ds.ctx, pc.close)()
		conn.Serve(peerHandler{r: r, peer: name})
		if !pc.closing.Load() {
			select {
			case r.ds.failed <- name:
			default: // the control goroutine also notices pc.failed()
			}
		}
	}()
	return pc, nil
}

// closeDirect closes every direct connection and stops pending dials.
func (r *Relay) closeDirect() {
	r.ds.cancel()
	for _, pc := range r.ds.conns {
		pc.close()
	}
	for _, rt := range r.ds.retiring {
		rt.pc.close()
	}
	r.ds.retiring = nil
	empty := map[string]*natsproto.Conn{}
	r.direct.Store(&empty)
}

// peerHandler serves a publish-only connection: it never subscribes, so
// it only sees PINGs (answered by natsproto) and errors.
type peerHandler struct {
	r    *Relay
	peer string
}

func (h peerHandler) Msg(*natsproto.Msg) {}
func (h peerHandler) Drained()           {}

func (h peerHandler) ServerError(text string) {
	h.r.log.Warn("peer server reported an error on the direct connection", "peer", h.peer, "err", text)
}

// directConns returns a snapshot of the direct connections.
func (r *Relay) directConns() map[string]*natsproto.Conn { return *r.direct.Load() }

// DirectPeers returns the names of the peers with a direct connection.
func (r *Relay) DirectPeers() []string {
	return slices.Sorted(maps.Keys(r.directConns()))
}

// markDown stops choosing a peer whose direct connection broke, until
// until; it runs on the control goroutine.
func (r *Relay) markDown(name string, until time.Time) {
	r.ds.down[name] = until
	r.log.Info("direct connection to peer broke; not sending it batons", "peer", name, "until", until.Format(time.TimeOnly))
	r.updatePeers(r.m.View(), time.Now(), true)
}

// updatePeers publishes the peers batons may go to: the alive peers less
// those marked down. It keeps the view's own slice when nothing is down,
// and publishes only on a change, so choosers see a stable list.
func (r *Relay) updatePeers(v *cluster.View, now time.Time, force bool) {
	ds := r.ds
	for name, until := range ds.down {
		if !now.Before(until) {
			delete(ds.down, name)
			force = true
		}
	}
	if !force && v == ds.lastView {
		return
	}
	ds.lastView = v

	peers := v.Peers
	if len(ds.down) > 0 {
		peers = slices.DeleteFunc(slices.Clone(v.Peers), func(p string) bool {
			_, down := ds.down[p]
			return down
		})
	}
	r.peers.Store(&peers)
}
