package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// DiscoveryConfig describes the multicast announcer and listener.
type DiscoveryConfig struct {
	Group     net.IP         // multicast group, IPv4
	Port      int            // UDP port, for the group and for seeds
	Interface *net.Interface // sends and joins here; never nil
	TTL       int
	Seeds     []*net.UDPAddr // also announced to by unicast
	Interval  time.Duration  // mean time between announcements

	Codec    *Codec
	Node     string
	Boot     uint64
	RouteURL string

	Logger *slog.Logger
}

// Heard is an accepted announcement.
type Heard struct {
	Announcement
	From    net.Addr
	At      time.Time // local monotonic time of receipt
	NewBoot bool      // first announcement from this boot of the node
}

// DiscoveryStats counts what discovery did since it started.
type DiscoveryStats struct {
	Sent       uint64            `json:"sent"`
	SendErrors uint64            `json:"send_errors"`
	Accepted   uint64            `json:"accepted"`
	Dropped    map[string]uint64 `json:"dropped"` // by DropReason name
	Backlog    uint64            `json:"backlog_drops"`
	// HeardMSAgo is how long ago another node's announcement was last
	// accepted; absent if none ever was.
	HeardMSAgo *int64 `json:"heard_ms_ago,omitempty"`
	// Isolated is true when no other node has been heard for
	// isolatedAfter intervals: either this node is alone, or multicast
	// does not reach it (and no seed does).
	Isolated bool `json:"isolated"`
}

// isolatedAfter is how many announcement intervals of silence make a
// node call itself isolated: a few, so that lost packets do not.
const isolatedAfter = 5

// Discovery announces this node on a multicast group (and to seeds by
// unicast) and reports the announcements it hears.
//
// OpenDiscovery starts two goroutines: a sender, which announces every
// Interval with ±20% jitter (so nodes booted together do not fall into
// lock-step) and whenever AnnounceNow is called; and a receiver, which
// authenticates, filters and counts every packet. Close stops both and
// waits for them.
type Discovery struct {
	cfg  DiscoveryConfig
	log  *slog.Logger
	conn net.PacketConn
	pc   *ipv4.PacketConn

	heard   chan Heard
	trigger chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	closing atomic.Bool
	leaving atomic.Bool // set by Leave; every later announcement says so

	start     time.Time
	lastHeard atomic.Int64 // time.Since(start) of the last accepted announcement, 0: never

	seq      atomic.Uint64
	sent     atomic.Uint64
	sendErrs atomic.Uint64
	accepted atomic.Uint64
	backlog  atomic.Uint64
	drops    [numDropReasons]atomic.Uint64
}

// OpenDiscovery opens the socket, joins the group and starts announcing.
func OpenDiscovery(cfg DiscoveryConfig) (*Discovery, error) {
	if cfg.Interface == nil {
		return nil, errors.New("discovery: no interface")
	}

	lc := net.ListenConfig{Control: reuseAddrPort}
	conn, err := lc.ListenPacket(nil, "udp4", fmt.Sprintf("0.0.0.0:%d", cfg.Port))
	if err != nil {
		return nil, fmt.Errorf("discovery: listen on UDP port %d: %w", cfg.Port, err)
	}
	pc := ipv4.NewPacketConn(conn)
	if err := setupMulticast(pc, cfg); err != nil {
		conn.Close()
		return nil, err
	}

	d := &Discovery{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "discovery"),
		conn:    conn,
		pc:      pc,
		heard:   make(chan Heard, 64),
		trigger: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		start:   time.Now(),
	}
	d.wg.Add(2)
	go d.sendLoop()
	go d.recvLoop()
	return d, nil
}

func setupMulticast(pc *ipv4.PacketConn, cfg DiscoveryConfig) error {
	group := &net.UDPAddr{IP: cfg.Group}
	if err := pc.JoinGroup(cfg.Interface, group); err != nil {
		return fmt.Errorf("discovery: join %s on %s: %w", cfg.Group, cfg.Interface.Name, err)
	}
	if err := pc.SetMulticastInterface(cfg.Interface); err != nil {
		return fmt.Errorf("discovery: send through %s: %w", cfg.Interface.Name, err)
	}
	if err := pc.SetMulticastTTL(cfg.TTL); err != nil {
		return fmt.Errorf("discovery: multicast TTL %d: %w", cfg.TTL, err)
	}
	// Loopback on, so that nodes sharing a host (the demo, tests) hear
	// each other; our own packets are dropped by boot id.
	if err := pc.SetMulticastLoopback(true); err != nil {
		return fmt.Errorf("discovery: multicast loopback: %w", err)
	}
	return nil
}

// reuseAddrPort lets several nodes on one host bind the discovery port.
// Every such socket receives each multicast packet; a unicast seed packet
// reaches only one of them, which is fine because seeds are for hosts
// that multicast does not reach.
func reuseAddrPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Heard delivers accepted announcements. It is read by one consumer; if
// that consumer falls behind, announcements are dropped (and counted)
// rather than blocking the receiver, since the next one comes in a second.
func (d *Discovery) Heard() <-chan Heard { return d.heard }

// AnnounceNow asks the sender for an extra announcement, so that a node
// that just started learns of this one without waiting a full interval.
func (d *Discovery) AnnounceNow() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

// Stats returns a snapshot of the counters.
func (d *Discovery) Stats() DiscoveryStats {
	st := DiscoveryStats{
		Sent:       d.sent.Load(),
		SendErrors: d.sendErrs.Load(),
		Accepted:   d.accepted.Load(),
		Backlog:    d.backlog.Load(),
		Dropped:    make(map[string]uint64),
	}
	for _, r := range DropReasons() {
		st.Dropped[r.String()] = d.drops[r].Load()
	}
	since := time.Since(d.start)
	silent := since
	if last := d.lastHeard.Load(); last != 0 {
		silent = since - time.Duration(last)
		ago := silent.Milliseconds()
		st.HeardMSAgo = &ago
	}
	st.Isolated = silent >= isolatedAfter*d.cfg.Interval
	return st
}

// Leave sends an announcement saying this node is leaving, so that peers
// drop their route to it at once instead of redialling it. Every
// announcement after it says the same: an ordinary one would make peers
// add the route back and dial a node that is about to be gone.
func (d *Discovery) Leave() {
	d.leaving.Store(true)
	d.announce()
}

// Close stops both loops and waits for them. Safe to call twice.
func (d *Discovery) Close() error {
	var err error
	d.once.Do(func() {
		d.closing.Store(true)
		close(d.stop)
		err = d.conn.Close() // unblocks the pending read
		d.wg.Wait()
	})
	return err
}

func (d *Discovery) sendLoop() {
	defer d.wg.Done()

	// Minimum gap between announcements, so AnnounceNow from a burst of
	// newcomers cannot turn into a packet storm.
	const minGap = 100 * time.Millisecond
	var last time.Time

	timer := time.NewTimer(0) // announce at once on start
	defer timer.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-timer.C:
		case <-d.trigger:
			// Too soon after the last one: defer it, never drop it,
			// or a newcomer waits a whole interval to hear us.
			if wait := minGap - time.Since(last); wait > 0 {
				timer.Reset(wait)
				continue
			}
		}

		d.announce()
		last = time.Now()
		timer.Reset(jitter(d.cfg.Interval))
	}
}

// jitter returns a duration uniformly spread over ±20% of d.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (d *Discovery) announce() {
	pkt, err := d.cfg.Codec.Seal(Announcement{
		Node:     d.cfg.Node,
		Boot:     d.cfg.Boot,
		Seq:      d.seq.Add(1),
		RouteURL: d.cfg.RouteURL,
		Leaving:  d.leaving.Load(),
	})
	if err != nil {
		d.sendErrs.Add(1)
		d.log.Error("cannot build announcement", "err", err)
		return
	}

	// Send from the interface's own address when it has one. Without
	// this, multicast through lo carries the source address of another
	// interface, which reads in logs as if it came from the LAN.
	var cm *ipv4.ControlMessage
	if ip, err := InterfaceIPv4(d.cfg.Interface); err == nil {
		cm = &ipv4.ControlMessage{Src: ip}
	}

	dsts := make([]*net.UDPAddr, 0, 1+len(d.cfg.Seeds))
	dsts = append(dsts, &net.UDPAddr{IP: d.cfg.Group, Port: d.cfg.Port})
	dsts = append(dsts, d.cfg.Seeds...)
	for _, dst := range dsts {
		if _, err := d.pc.WriteTo(pkt, cm, dst); err != nil {
			if d.closing.Load() {
				return
			}
			// Typical at boot, before the interface has an address;
			// the next announcement tries again.
			if d.sendErrs.Add(1)%60 == 1 {
				d.log.Warn("cannot send announcement", "to", dst, "err", err)
			}
			continue
		}
		d.sent.Add(1)
	}
}

func (d *Discovery) recvLoop() {
	defer d.wg.Done()

	filter := NewFilter(d.cfg.Boot)
	limiter := newLogLimiter(time.Minute, 256)
	// Larger than any UDP payload (65,507 bytes over IPv4), so a packet
	// is never truncated into one that merely looks short.
	buf := make([]byte, 65536)
	backoff := time.Duration(0)

	for {
		n, _, src, err := d.pc.ReadFrom(buf)
		if err != nil {
			if d.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = nextBackoff(backoff)
			d.log.Warn("discovery read failed", "err", err, "retry_in", backoff)
			select {
			case <-d.stop:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0

		d.handle(buf[:n], src, filter, limiter)
	}
}

func (d *Discovery) handle(pkt []byte, src net.Addr, filter *Filter, limiter *logLimiter) {
	now := time.Now()

	a, err := d.cfg.Codec.Open(pkt)
	if err != nil {
		r := ReasonOf(err)
		d.drops[r].Add(1)
		d.logDrop(limiter, src, r, err, now)
		return
	}

	r, newBoot := filter.Check(a)
	if r != DropNone {
		d.drops[r].Add(1)
		d.logDrop(limiter, src, r, fmt.Errorf("node %s: %s", a.Node, r), now)
		return
	}

	d.accepted.Add(1)
	d.lastHeard.Store(int64(max(now.Sub(d.start), 1)))
	select {
	case d.heard <- Heard{Announcement: a, From: src, At: now, NewBoot: newBoot}:
	default:
		d.backlog.Add(1)
	}
}

// logDrop logs a dropped packet at most once per sender, reason and
// minute. Own packets and duplicates (the same announcement received by
// multicast and as a seed) are normal and never logged above debug.
func (d *Discovery) logDrop(l *logLimiter, src net.Addr, r DropReason, err error, now time.Time) {
	if r == DropSelf || r == DropReplay {
		return
	}
	from := src.String()
	if ua, ok := src.(*net.UDPAddr); ok {
		from = ua.IP.String()
	}
	if l.allow(from+"/"+r.String(), now) {
		d.log.Warn("dropped discovery packet", "from", from, "reason", r.String(), "err", err)
	}
}

func nextBackoff(b time.Duration) time.Duration {
	switch {
	case b == 0:
		return 5 * time.Millisecond
	case b >= time.Second:
		return time.Second
	}
	return 2 * b
}

// logLimiter allows one event per key per interval. It holds at most max
// keys; when full it forgets everything, which at worst logs a few lines
// again.
type logLimiter struct {
	every time.Duration
	max   int
	last  map[string]time.Time
}

func newLogLimiter(every time.Duration, max int) *logLimiter {
	return &logLimiter{every: every, max: max, last: make(map[string]time.Time)}
}

func (l *logLimiter) allow(key string, now time.Time) bool {
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		return false
	}
	if len(l.last) >= l.max {
		clear(l.last)
	}
	l.last[key] = now
	return true
}
