package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Config describes one cluster node: its embedded NATS server, its
// discovery and its membership.
type Config struct {
	Name    string
	Cluster string
	Secret  string

	ClientHost    string
	ClientPort    int
	RouteHost     string
	RoutePort     int
	AdvertiseHost string // empty: the route listener's own address

	Group            net.IP
	DiscoveryPort    int
	Interface        *net.Interface
	TTL              int
	Seeds            []*net.UDPAddr
	AnnounceInterval time.Duration

	HeartbeatInterval time.Duration
	Membership        MembershipConfig
	Routes            RoutePlanConfig
	RoutePing         time.Duration
	RouteTLS          *tls.Config // mutual TLS on routes; nil for plain TCP
	// NameCheck is how long after its start a node that hears its own
	// name from another process takes itself for the newcomer and stops;
	// zero means 5s. Two nodes that start within it under one name both
	// stop, which is the safe outcome.
	NameCheck time.Duration

	// Status is called before every heartbeat for what the node reports
	// about its relay. Nil reports a node that does not relay.
	Status func() RelayStatus

	// HeartbeatPrefix is the subject prefix of this node's membership
	// (the heartbeats it sends and hears); empty means
	// HeartbeatSubjectPrefix, the relay nodes' membership. embedded-nats
	// keeps its own (NATSHeartbeatPrefix), so that an embedded-nats and
	// a batond on one host may share the host's name.
	HeartbeatPrefix string

	// NATSURL, when set, makes this a member without a server of its
	// own: no embedded server, no discovery and no routes (the server
	// at NATSURL, an embedded-nats, does those). The node connects there
	// as NodeUser and runs only the membership. ClientURL is what its
	// heartbeats advertise as the address relays publish to it at; empty
	// advertises none, and peers then reach it through the routes.
	NATSURL   string
	ClientURL string

	Logger     *slog.Logger
	LogNotices bool // NATS notices at info level
}

// RelayStatus is what a node says about its relay in its heartbeats.
type RelayStatus struct {
	Hops     uint64 // batons passed on since start
	Batons   bool   // batons are known to be in flight
	Relaying bool   // the relay is subscribed: batons sent here are taken
}

// View is an immutable snapshot of the membership, published on every
// change. Readers on the hot path load it with one atomic read.
type View struct {
	Self    string
	Members []Member // every known member, self included, sorted by name
	Alive   []string // alive members, self included, sorted
	// Relays are the alive members that take batons, self included when
	// its relay is running, sorted. A node's heartbeats say so only once
	// its relay has subscribed, so no baton goes to a node still starting
	// (embedded-nats nodes keep a membership of their own).
	Relays []string
	Peers  []string // Relays other than self: where batons may go
	Batons bool     // some alive member reports batons in flight
	Epoch  uint64   // increases whenever Alive changes
}

// Node is one running cluster member.
//
// StartNode starts the embedded server, discovery and two goroutines: the
// route manager (the only caller of Server.SetRoutes) and the membership
// loop (which sends heartbeats, receives them and owns the membership
// table). Leave says goodbye; Close stops everything and waits.
type Node struct {
	cfg  Config
	log  *slog.Logger
	boot uint64

	srv  *Server
	disc *Discovery
	nc   *nats.Conn
	sub  *nats.Subscription

	hbCh  chan Heartbeat
	hbNow chan struct{} // asks the membership loop for an early heartbeat
	hbSeq atomic.Uint64
	hbBad atomic.Uint64
	// hbLimiter paces the name-conflict log of the heartbeat callback,
	// which owns it.
	hbLimiter *logLimiter
	view      atomic.Pointer[View]
	changes   chan struct{}
	fatal     chan error // a reason this node must not go on; see Fatal
	started   time.Time
	leaving   atomic.Bool
	stop      chan struct{}
	wg        sync.WaitGroup
	once      sync.Once
}

// RouteUser is the user name routes authenticate with.
const RouteUser = "baton-route"

// StartNode brings the node up. On error everything started is stopped.
func StartNode(cfg Config) (_ *Node, err error) {
	if cfg.HeartbeatPrefix == "" {
		cfg.HeartbeatPrefix = HeartbeatSubjectPrefix
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		boot:      randomBoot(),
		hbCh:      make(chan Heartbeat, 256),
		hbNow:     make(chan struct{}, 1),
		hbLimiter: newLogLimiter(time.Minute, 4),
		changes:   make(chan struct{}, 1),
		fatal:     make(chan error, 1),
		started:   time.Now(),
		stop:      make(chan struct{}),
	}
	defer func() {
		if err != nil {
			n.closeParts()
		}
	}()
	if cfg.NATSURL != "" {
		if err := n.connectExternal(); err != nil {
			return nil, err
		}
		n.publishView(NewMembership(cfg.Name, cfg.Membership), 0)
		n.wg.Add(1)
		go n.memberLoop()
		return n, nil
	}

	codec, err := NewCodec(cfg.Secret, cfg.Cluster, nil)
	if err != nil {
		return nil, err
	}
	n.srv, err = StartServer(ServerConfig{
		Name:           cfg.Name,
		Cluster:        cfg.Cluster,
		ClientHost:     cfg.ClientHost,
		ClientPort:     cfg.ClientPort,
		RouteHost:      cfg.RouteHost,
		RoutePort:      cfg.RoutePort,
		AdvertiseHost:  cfg.AdvertiseHost,
		RouteUser:      RouteUser,
		RoutePassword:  DerivePassword(cfg.Secret, cfg.Cluster, "route"),
		ClientPassword: DerivePassword(cfg.Secret, cfg.Cluster, "client"),
		NodePassword:   DerivePassword(cfg.Secret, cfg.Cluster, "node"),
		SysPassword:    DerivePassword(cfg.Secret, cfg.Cluster, "sys"),
		PingInterval:   cfg.RoutePing,
		RouteTLS:       cfg.RouteTLS,
		MaxPingsOut:    2,
		Logger:         cfg.Logger,
		LogNotices:     cfg.LogNotices,
	})
	if err != nil {
		return nil, err
	}

	n.nc, err = n.srv.Connect(cfg.Name + "-control")
	if err != nil {
		return nil, err
	}
	if err := n.subscribeHeartbeats(); err != nil {
		return nil, err
	}

	n.disc, err = OpenDiscovery(DiscoveryConfig{
		Group:     cfg.Group,
		Port:      cfg.DiscoveryPort,
		Interface: cfg.Interface,
		TTL:       cfg.TTL,
		Seeds:     cfg.Seeds,
		Interval:  cfg.AnnounceInterval,
		Codec:     codec,
		Node:      cfg.Name,
		Boot:      n.boot,
		RouteURL:  n.srv.RouteURL(),
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, err
	}

	n.publishView(NewMembership(cfg.Name, cfg.Membership), 0)
	n.wg.Add(2)
	go n.routeLoop()
	go n.memberLoop()
	return n, nil
}

// connectExternal connects to the server at NATSURL for the membership.
// The connection reconnects on its own if that server restarts; the
// relay's connections are the relay's business.
func (n *Node) connectExternal() error {
	// A few tries: the server re-checks authorization on every config
	// reload (its route manager reloads as peers come and go) and drops
	// a client caught in the middle of its handshake.
	var nc *nats.Conn
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
		}
		if nc, err = n.dialExternal(); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("connect to %s: %w", n.cfg.NATSURL, err)
	}
	n.nc = nc
	return n.subscribeHeartbeats()
}

func (n *Node) dialExternal() (*nats.Conn, error) {
	return n.Connect(n.cfg.Name+"-control",
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.log.Warn("lost the connection to the NATS server; reconnecting", "url", n.cfg.NATSURL, "err", err)
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			n.log.Info("reconnected to the NATS server", "url", n.cfg.NATSURL)
		}),
	)
}

// Connect opens a client connection to this node's server as NodeUser:
// in process to the embedded one, or over TCP to Config.NATSURL. It
// reconnects by itself and does not echo its own messages.
func (n *Node) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	if n.srv != nil {
		return n.srv.Connect(name, opts...)
	}
	base := []nats.Option{
		nats.Name(name),
		nats.UserInfo(NodeUser, DerivePassword(n.cfg.Secret, n.cfg.Cluster, "node")),
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}
	return nats.Connect(n.cfg.NATSURL, append(base, opts...)...)
}

func (n *Node) subscribeHeartbeats() error {
	var err error
	wildcard := n.cfg.HeartbeatPrefix + "*"
	n.sub, err = n.nc.Subscribe(wildcard, n.onHeartbeat)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", wildcard, err)
	}
	return nil
}

func randomBoot() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// DerivePassword derives a NATS password for purpose from the shared
// secret. Each purpose gets an unrelated password, so the route password
// cannot be used as a client password, and the cluster name is bound in.
func DerivePassword(secret, cluster, purpose string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("baton/password/v1\x00" + cluster + "\x00" + purpose))
	return hex.EncodeToString(mac.Sum(nil)[:16])
}

// Server returns the embedded NATS server, or nil for a node that uses
// a server at Config.NATSURL.
func (n *Node) Server() *Server { return n.srv }

// ClientURL is where relays publish to this node: its server's advertised
// client address, or Config.ClientURL with an external server.
func (n *Node) ClientURL() string {
	if n.srv == nil {
		return n.cfg.ClientURL
	}
	return n.srv.ClientURL()
}

// RouteURL is the route address this node announces; empty with an
// external server.
func (n *Node) RouteURL() string {
	if n.srv == nil {
		return ""
	}
	return n.srv.RouteURL()
}

// Boot returns this process's boot id.
func (n *Node) Boot() uint64 { return n.boot }

// View returns the current membership snapshot. Never nil.
func (n *Node) View() *View { return n.view.Load() }

// Changes receives a value after the set of alive members changes.
// Signals are coalesced: one read may stand for several changes.
func (n *Node) Changes() <-chan struct{} { return n.changes }

// Fatal receives an error when this node must stop: so far, when it has
// just started and finds another node already running under its name.
func (n *Node) Fatal() <-chan error { return n.fatal }

// DiscoveryStats returns the discovery counters; zero with an external
// server, which does the discovery.
func (n *Node) DiscoveryStats() DiscoveryStats {
	if n.disc == nil {
		return DiscoveryStats{}
	}
	return n.disc.Stats()
}

// BadHeartbeats counts heartbeat messages that did not parse.
func (n *Node) BadHeartbeats() uint64 { return n.hbBad.Load() }

// Routes returns the names of the peers this node has a NATS route to;
// nil with an external server.
func (n *Node) Routes() []string {
	if n.srv == nil {
		return nil
	}
	return n.srv.RemoteNames()
}

// Leave tells the cluster this node is stopping: a final heartbeat with
// state "left" (peers mark it left at once, not dead after a timeout, and
// stop sending to it) and a leaving announcement (peers drop their route
// to it instead of redialling). The node keeps running until Close.
func (n *Node) Leave(ctx context.Context) error {
	if !n.leaving.CompareAndSwap(false, true) {
		return nil
	}
	n.publishHeartbeat()
	if n.disc != nil {
		n.disc.Leave()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	if err := n.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flush leave heartbeat: %w", err)
	}
	return nil
}

// Close stops the node's goroutines, discovery and server, and waits for
// them. It does not say goodbye; call Leave first for a clean stop.
// Safe to call twice.
func (n *Node) Close() {
	n.once.Do(func() {
		close(n.stop)
		n.wg.Wait()
		n.closeParts()
	})
}

func (n *Node) closeParts() {
	if n.disc != nil {
		n.disc.Close()
	}
	if n.nc != nil {
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Close()
	}
}

func (n *Node) onHeartbeat(m *nats.Msg) {
	hb, err := decodeHeartbeat(n.cfg.HeartbeatPrefix, m.Subject, m.Data)
	if err != nil {
		if n.hbBad.Add(1)%100 == 1 {
			n.log.Warn("dropped bad heartbeat", "subject", m.Subject, "err", err)
		}
		return
	}
	// Our own heartbeats are not echoed back, so this one is another
	// process's. Discovery catches a duplicate name of a node with a
	// server of its own; without one, this is the only place to.
	if hb.Node == n.cfg.Name && n.disc == nil {
		n.nameConflict("a heartbeat on "+m.Subject, n.hbLimiter)
		return
	}
	select {
	case n.hbCh <- hb:
	default:
		n.hbBad.Add(1)
	}
}

func (n *Node) routeLoop() {
	defer n.wg.Done()

	planner := NewRoutePlanner(n.cfg.Name, n.cfg.Routes)
	limiter := newLogLimiter(time.Minute, 4)
	// Announcements wake this loop at once; the tick paces the checks
	// that need time to pass (HealAfter, Grace), each a Routez call.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var linked []string

	for {
		select {
		case <-n.stop:
			return
		case h := <-n.disc.Heard():
			if h.Node == n.cfg.Name {
				n.nameConflict("an announcement from "+h.From.String(), limiter)
				continue
			}
			if h.NewBoot {
				n.log.Info("heard peer", "peer", h.Node, "route", h.RouteURL, "from", h.From)
				// Answer a newcomer at once rather than in up to a
				// second, so it can seed its route sooner.
				n.disc.AnnounceNow()
			}
			if !planner.Heard(h.Announcement, h.At) {
				continue
			}
		case <-tick.C:
			n.reportIsolation(limiter)
		}
		linked = n.replan(planner, linked)
	}
}

// nameConflict handles an announcement of this node's name by another
// process (another boot). Two nodes under one name receive each other's
// batons and multiply them without bound, so the newcomer stops; a node
// that has run for a while keeps running and says so loudly.
// from says how the other node was heard. The limiter belongs to the
// calling goroutine.
func (n *Node) nameConflict(from string, limiter *logLimiter) {
	window := n.cfg.NameCheck
	if window == 0 {
		window = 5 * time.Second
	}
	if time.Since(n.started) < window {
		err := fmt.Errorf("BATON_NODE_NAME: another node named %q is already running (heard in %s); every node needs its own name", n.cfg.Name, from)
		select {
		case n.fatal <- err:
		default:
		}
		return
	}
	if limiter.allow("conflict", time.Now()) {
		n.log.Error("another node uses this node's name; one of them must be renamed", "name", n.cfg.Name, "heard_in", from)
	}
}

// reportIsolation logs, once a minute, that no other node has been heard.
// It cannot tell "alone" from "cut off", so it says what it knows and
// where to look.
func (n *Node) reportIsolation(limiter *logLimiter) {
	st := n.disc.Stats()
	if !st.Isolated || !limiter.allow("isolated", time.Now()) {
		return
	}
	n.log.Warn("no discovery announcement heard from any other node; if other nodes run, "+
		"multicast does not reach this one: check the firewall (UDP discovery port), IGMP snooping, "+
		"Wi-Fi power saving and BATON_MULTICAST_IF, or list peers in BATON_SEEDS",
		"silent_for", (isolatedAfter * n.cfg.AnnounceInterval).String(), "sent", st.Sent)
}

// replan applies the planner's routes and returns the connected peers.
// A newly connected peer gets a heartbeat at once, so that membership
// forms in milliseconds rather than a heartbeat interval.
func (n *Node) replan(planner *RoutePlanner, before []string) []string {
	linked := n.srv.RemoteNames()
	for _, name := range linked {
		if !slices.Contains(before, name) {
			n.heartbeatSoon()
			break
		}
	}

	urls, changed := planner.Plan(linked, time.Now())
	if !changed {
		return linked
	}
	if err := n.srv.SetRoutes(urls); err != nil {
		n.log.Error("cannot change routes", "routes", urls, "err", err)
		return linked
	}
	n.log.Info("explicit routes changed", "routes", urls)
	return linked
}

func (n *Node) heartbeatSoon() {
	select {
	case n.hbNow <- struct{}{}:
	default:
	}
}

func (n *Node) memberLoop() {
	defer n.wg.Done()

	m := NewMembership(n.cfg.Name, n.cfg.Membership)
	var epoch uint64
	hbTimer := time.NewTimer(0)
	defer hbTimer.Stop()
	tick := time.NewTicker(n.cfg.HeartbeatInterval / 2)
	defer tick.Stop()

	for {
		var ts []Transition
		select {
		case <-n.stop:
			return
		case <-hbTimer.C:
			if !n.leaving.Load() {
				n.publishHeartbeat()
			}
			hbTimer.Reset(jitter(n.cfg.HeartbeatInterval))
			continue
		case <-n.hbNow:
			if !n.leaving.Load() {
				n.publishHeartbeat()
			}
			continue
		case hb := <-n.hbCh:
			if t, ok := m.Observe(hb, time.Now()); ok {
				ts = append(ts, t)
			} else {
				n.refreshView(m, epoch)
				continue
			}
		case now := <-tick.C:
			ts = m.Tick(now)
		}

		for _, t := range ts {
			if t.New {
				n.log.Info("member joined", "peer", t.Name, "state", t.To)
				n.heartbeatSoon() // let the newcomer see us at once too
				continue
			}
			n.log.Info("member changed", "peer", t.Name, "from", t.From, "to", t.To)
		}
		if len(ts) > 0 {
			epoch++
			n.publishView(m, epoch)
		}
	}
}

func (n *Node) publishHeartbeat() {
	hb := Heartbeat{Node: n.cfg.Name, Boot: n.boot, Leaving: n.leaving.Load(), ClientURL: n.ClientURL()}
	if n.cfg.Status != nil {
		st := n.cfg.Status()
		hb.Hops, hb.Injected, hb.Relay = st.Hops, st.Batons, st.Relaying
	}
	if err := n.nc.Publish(n.cfg.HeartbeatPrefix+n.cfg.Name, encodeHeartbeat(hb, n.hbSeq.Add(1))); err != nil {
		n.log.Warn("cannot publish heartbeat", "err", err)
	}
}

// refreshView republishes the snapshot when a heartbeat changed a
// member's details (hops, batons, relay) without changing who is alive.
func (n *Node) refreshView(m *Membership, epoch uint64) {
	n.view.Store(buildView(n.cfg.Name, m, epoch, n.relaying()))
}

func (n *Node) publishView(m *Membership, epoch uint64) {
	n.view.Store(buildView(n.cfg.Name, m, epoch, n.relaying()))
	select {
	case n.changes <- struct{}{}:
	default:
	}
}

func (n *Node) relaying() bool {
	return n.cfg.Status != nil && n.cfg.Status().Relaying
}

// HeartbeatSoon asks for a heartbeat now rather than at the next
// interval, for example because the relay has just started.
func (n *Node) HeartbeatSoon() { n.heartbeatSoon() }

func buildView(self string, m *Membership, epoch uint64, selfRelays bool) *View {
	v := &View{Self: self, Members: m.Members(), Alive: m.Alive(), Epoch: epoch}
	for _, mem := range v.Members {
		relays := mem.Relay
		if mem.Name == self {
			relays = selfRelays
		}
		if mem.State == StateAlive && relays {
			v.Relays = append(v.Relays, mem.Name)
		}
		if mem.State == StateAlive && mem.Injected {
			v.Batons = true
		}
	}
	v.Peers = slices.DeleteFunc(slices.Clone(v.Relays), func(s string) bool { return s == self })
	return v
}
