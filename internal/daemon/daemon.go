package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/clusterstatus"
	"github.com/baton-relay/baton/internal/live"
	"github.com/baton-relay/baton/internal/metrics"
	"github.com/baton-relay/baton/relay"
)

// Version is stamped at build time with -ldflags.
var Version = "dev"

// Daemon is one running baton node.
//
// Start brings up the cluster node, the relay and the HTTP server.
// Shutdown stops cleanly: it tells the cluster this node is leaving, keeps
// passing batons on for BATON_LEAVE_GRACE, drains the relay, then stops.
// Close stops at once without a goodbye, as a crash would (tests use it).
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	started time.Time
	iface   string

	node  *cluster.Node
	relay *relay.Relay
	// relayPtr publishes relay to the node's heartbeat goroutine, which
	// starts before the relay exists.
	relayPtr atomic.Pointer[relay.Relay]
	// metrics reports per BATON_METRICS_INTERVAL; started after the
	// relay, stopped after it by Shutdown (to count every hop) and
	// before everything by Close.
	metrics *metrics.Loop
	http    *http.Server
	ln      net.Listener
	serve   chan error // result of http.Serve

	// Rates and cluster status over NATS (batond status).
	rates      *rateTracker
	sampler    stopper // owns the goroutine that feeds rates
	statusResp *clusterstatus.Responder

	history *live.Recorder // behind GET /history; nil without HTTP
}

// Start validates cfg, then starts every part. On error, whatever was
// started is stopped again.
func Start(cfg Config, log *slog.Logger) (_ *Daemon, err error) {
	ncfg, err := prepare(cfg, log, "batond")
	if err != nil {
		return nil, err
	}

	statsdTarget, err := dogStatsDTarget()
	if err != nil {
		return nil, err
	}

	d := &Daemon{cfg: cfg, log: log, started: time.Now(), iface: ncfg.Interface.Name}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	// The HTTP listener is bound first, so a port in use fails fast
	// before anything joins the cluster.
	if cfg.HTTPAddr != HTTPOff {
		d.ln, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("BATON_HTTP_ADDR: %w", err)
		}
	}

	// NATS reports a busy port only in its log; checking first gives an
	// error that names the variable. (A port taken between this check
	// and NATS's own bind still fails, with NATS's message.) With
	// BATON_NATS_URL there is no server of our own to check for.
	if cfg.NATSURL == "" {
		if err := checkListeners(cfg); err != nil {
			return nil, err
		}
	}

	ncfg.Status = d.relayStatus
	d.node, err = cluster.StartNode(ncfg)
	if err != nil {
		if cfg.NATSURL != "" {
			return nil, fmt.Errorf("BATON_NATS_URL: %w", err)
		}
		return nil, err
	}

	strategy, _ := relay.ParseStrategy(cfg.PeerChoice) // validated above
	d.relay, err = relay.Start(relay.Config{
		Node:         cfg.NodeName,
		Batons:       cfg.Batons,
		MinNodes:     cfg.MinNodes,
		Strategy:     strategy,
		Leader:       cfg.Leader,
		Direct:       cfg.Direct,
		Settle:       2 * cfg.HeartbeatInterval,
		NodePassword: cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "node"),
		// Recovery and its timeout, see relay/progress.go.
		LossTimeout: cfg.LossTimeout,
		DownFor:     cfg.DeadAfter,
		Logger:      log,
	}, d.dialer(), d.node)
	if err != nil {
		return nil, err
	}
	// Only now do heartbeats say this node takes batons.
	d.relayPtr.Store(d.relay)
	d.node.HeartbeatSoon()
	d.startMetrics(statsdTarget)

	if err := d.startStatus(); err != nil {
		return nil, err
	}

	if d.ln != nil {
		d.startHistory()
		d.http = &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
		d.serve = make(chan error, 1)
		go func() { d.serve <- d.http.Serve(d.ln) }()
		log.Info("status endpoint", "url", "http://"+d.ln.Addr().String()+"/status")
		log.Info("live page", "url", "http://"+d.ln.Addr().String()+"/")
	}
	log.Info("node started",
		"route_url", d.node.RouteURL(),
		"client_url", d.node.ClientURL(),
	)
	return d, nil
}

// dialer connects the relay to its server: in process to the embedded
// one, or over TCP to BATON_NATS_URL.
func (d *Daemon) dialer() relay.Dialer {
	if srv := d.node.Server(); srv != nil {
		return srv.NATS().InProcessConn
	}
	addr := natsHostPort(d.cfg.NATSURL)
	return func() (net.Conn, error) {
		return net.DialTimeout("tcp", addr, 5*time.Second)
	}
}

// prepare validates cfg, resolves it into the cluster layer's config and
// logs the start-up lines every program of baton shares.
func prepare(cfg Config, log *slog.Logger, program string) (cluster.Config, error) {
	if err := cfg.Validate(); err != nil {
		return cluster.Config{}, err
	}
	ncfg, why, err := nodeConfig(cfg, log)
	if err != nil {
		return cluster.Config{}, err
	}
	log.Info("starting "+program, "version", Version, "config", cfg)
	warnWeak(cfg, log)
	if cfg.NATSURL != "" {
		log.Info("using the NATS server at BATON_NATS_URL: discovery and routes are its job, membership and the relay this one's",
			"url", cfg.NATSURL, "advertised_client_url", ncfg.ClientURL)
		return ncfg, nil
	}
	log.Info("discovery interface", "interface", ncfg.Interface.Name, "why", why)
	return ncfg, nil
}

// warnWeak logs settings that work but are probably mistakes.
func warnWeak(cfg Config, log *slog.Logger) {
	if unknown := UnknownVariables(); len(unknown) > 0 {
		log.Warn("ignoring unknown BATON_ variables; is one a typo? (.env.example lists them all)", "variables", unknown)
	}
	if len(cfg.Secret) < 16 {
		log.Warn("BATON_SECRET is short; use at least 16 random characters (openssl rand -hex 16)", "length", len(cfg.Secret))
	}
	if ip := net.ParseIP(cfg.MulticastAddr).To4(); ip != nil && ip[0] != 239 {
		log.Warn("BATON_MULTICAST_ADDR is outside 239.0.0.0/8, the administratively scoped range meant for this", "addr", cfg.MulticastAddr)
	}
}

// relayStatus feeds the heartbeat; it may run before the relay exists.
func (d *Daemon) relayStatus() cluster.RelayStatus {
	r := d.relayPtr.Load()
	if r == nil {
		return cluster.RelayStatus{}
	}
	return cluster.RelayStatus{Hops: r.Hops(), Batons: r.Seen(), Relaying: true}
}

// nodeConfig turns validated settings into the cluster layer's config,
// resolving the interface and listen addresses.
func nodeConfig(cfg Config, log *slog.Logger) (cluster.Config, string, error) {
	group := net.ParseIP(cfg.MulticastAddr).To4()
	ifi, why, err := cluster.PickInterface(cfg.MulticastIF, group)
	if err != nil {
		return cluster.Config{}, "", fmt.Errorf("BATON_MULTICAST_IF: %w", err)
	}
	seeds, err := cfg.seedAddrs()
	if err != nil {
		return cluster.Config{}, "", err
	}
	clientHost, clientPort := splitListen(cfg.NATSListen)
	routeHost, routePort := splitListen(cfg.RouteListen)

	advertise := cfg.Advertise
	if advertise == "" {
		ip, err := cluster.InterfaceIPv4(ifi)
		if err != nil {
			return cluster.Config{}, "", fmt.Errorf("BATON_MULTICAST_IF: %s has no IPv4 address to advertise routes on; set BATON_ADVERTISE or wait for the address: %w", ifi.Name, err)
		}
		advertise = ip.String()
	}

	routeTLS, err := cfg.routeTLS()
	if err != nil {
		return cluster.Config{}, "", err
	}
	var clientURL string
	if cfg.NATSURL != "" {
		clientURL = externalClientURL(cfg.NATSURL, advertise)
	}

	return cluster.Config{
		NATSURL:           cfg.NATSURL,
		ClientURL:         clientURL,
		Name:              cfg.NodeName,
		Cluster:           cfg.ClusterName,
		Secret:            cfg.Secret,
		ClientHost:        clientHost,
		ClientPort:        clientPort,
		RouteHost:         routeHost,
		RoutePort:         routePort,
		AdvertiseHost:     advertise,
		Group:             group,
		DiscoveryPort:     cfg.MulticastPort,
		Interface:         ifi,
		TTL:               cfg.MulticastTTL,
		Seeds:             seeds,
		AnnounceInterval:  cfg.AnnounceInterval,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Membership: cluster.MembershipConfig{
			SuspectAfter: cfg.SuspectAfter,
			DeadAfter:    cfg.DeadAfter,
			ForgetAfter:  cfg.RouteGrace,
		},
		Routes: cluster.RoutePlanConfig{
			HealAfter: 3 * cfg.AnnounceInterval,
			Grace:     cfg.RouteGrace,
		},
		RoutePing:  cfg.RoutePing,
		RouteTLS:   routeTLS,
		Logger:     log,
		LogNotices: true,
	}, why, nil
}

// externalClientURL is the client address a batond using the server at
// natsURL advertises in its heartbeats, where peers' relays publish its
// batons (BATON_DIRECT). A loopback or unspecified host means the server
// runs beside it (an embedded-nats on the same host), reachable from the
// peers at this host's advertised address. A host name advertises
// nothing (heartbeats carry addresses only): peers then reach this node
// through the routes.
func externalClientURL(natsURL, advertise string) string {
	host, port, _ := net.SplitHostPort(natsHostPort(natsURL))
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return ""
	case ip.IsLoopback() || ip.IsUnspecified():
		host = advertise
	}
	return "nats://" + net.JoinHostPort(host, port)
}

// splitListen splits a validated host:port; port 0 becomes NATS's -1,
// "any free port" (NATS reads 0 as its default port).
func splitListen(addr string) (string, int) {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if p == 0 {
		p = -1
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, p
}

// waitForAddress waits until BATON_MULTICAST_IF has an IPv4 address, when
// the address is needed (no BATON_ADVERTISE) and missing. An interface
// that does not exist at all is a configuration error, left to Start.
func waitForAddress(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.MulticastIF == "" || cfg.Advertise != "" {
		return nil
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for logged := false; ; logged = true {
		ifi, err := net.InterfaceByName(cfg.MulticastIF)
		if err != nil {
			return nil
		}
		if _, err := cluster.InterfaceIPv4(ifi); err == nil {
			if logged {
				log.Info("address appeared; starting", "interface", ifi.Name)
			}
			return nil
		}
		if !logged {
			log.Warn("waiting for an IPv4 address on the discovery interface", "interface", ifi.Name)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// waitForServer waits until the server at BATON_NATS_URL takes TCP
// connections, when one is set: batond and the embedded-nats beside it
// start together at boot, and a batond that exits because its server is
// a second late only adds a restart to the log.
func waitForServer(ctx context.Context, cfg Config, log *slog.Logger) {
	if cfg.NATSURL == "" || cfg.Validate() != nil {
		return // Start reports the configuration error
	}
	addr := natsHostPort(cfg.NATSURL)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for logged := false; ; logged = true {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			if logged {
				log.Info("the NATS server at BATON_NATS_URL is up; starting", "url", cfg.NATSURL)
			}
			return
		}
		if !logged {
			log.Warn("waiting for the NATS server at BATON_NATS_URL", "url", cfg.NATSURL, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkListeners checks that the NATS client and route listen addresses
// can be bound, naming the variable of the one that cannot.
func checkListeners(cfg Config) error {
	for _, l := range []struct{ name, addr string }{
		{"BATON_NATS_LISTEN", cfg.NATSListen},
		{"BATON_ROUTE_LISTEN", cfg.RouteListen},
	} {
		if err := checkFree(l.addr); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}
	return nil
}

// checkFree reports whether a TCP listen address can be bound now.
func checkFree(addr string) error {
	// Port 0 too: the port is then surely free, but the host part may
	// still be an address this machine does not have.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

// Node returns the cluster node.
func (d *Daemon) Node() *cluster.Node { return d.node }

// Relay returns the relay.
func (d *Daemon) Relay() *relay.Relay { return d.relay }

// HTTPAddr returns the bound status address, or "" without one.
func (d *Daemon) HTTPAddr() string {
	if d.ln == nil {
		return ""
	}
	return d.ln.Addr().String()
}

// Shutdown stops the node cleanly; see Daemon. ctx bounds the whole stop.
func (d *Daemon) Shutdown(ctx context.Context) error {
	var errs []error
	d.log.Info("leaving the cluster", "grace", d.cfg.LeaveGrace)
	if err := d.node.Leave(ctx); err != nil {
		errs = append(errs, err)
	}

	// Peers stop choosing this node as soon as they see the goodbye;
	// batons already on their way here are passed on meanwhile.
	select {
	case <-time.After(d.cfg.LeaveGrace):
	case <-ctx.Done():
	}
	if err := d.relay.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	// The metrics loop sends its last, partial interval once the relay
	// has stopped counting, so that the counts sent add up to the totals.
	d.metrics.Stop()
	// Expected when the whole cluster stops: the last node has no one to
	// hand its batons to. Anywhere else the relay would have passed them.
	if d.relay.Parked() > 0 {
		d.log.Info("stopped holding batons: no live peer was left to take them", "batons", d.relay.Parked())
	}

	if d.http != nil {
		if err := d.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
	}
	d.stopStatus()
	d.stopHistory()
	d.node.Close()
	d.log.Info("stopped", "hops", d.relay.Hops())
	return errors.Join(errs...)
}

// Close stops everything at once, without telling the cluster, as a
// crash would: the server goes first, so that peers see its connections
// break rather than a server that takes batons with no relay behind it.
// Safe to call on a partly started daemon.
func (d *Daemon) Close() {
	d.stopStatus()
	if d.metrics != nil {
		d.metrics.Stop()
	}
	if d.node != nil {
		d.node.Close()
	}
	if d.relay != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no draining: a crash does not drain
		d.relay.Stop(ctx)
	}
	if d.http != nil {
		d.http.Close()
	} else if d.ln != nil {
		d.ln.Close()
	}
	d.stopHistory()
}

// Run starts a daemon and stops it cleanly when ctx is done. If the
// discovery interface has no IPv4 address yet (a Pi whose Wi-Fi comes up
// after batond), it waits for one instead of failing into a restart loop.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := waitForAddress(ctx, cfg, log); err != nil || ctx.Err() != nil {
		return err
	}
	if waitForServer(ctx, cfg, log); ctx.Err() != nil {
		return nil
	}
	d, err := Start(cfg, log)
	if err != nil {
		return err
	}

	select {
	case <-ctx.Done():
	case err := <-d.serve:
		d.Close()
		return fmt.Errorf("status endpoint: %w", err)
	case err := <-d.node.Fatal():
		d.Close()
		return err
	case <-d.relay.Broken():
		d.Close()
		// With BATON_NATS_URL, the server went away (an embedded-nats
		// restart); in process, the server dropped the relay.
		return errors.New("the relay's connection to its NATS server ended; stopping, so that a restart reconnects")
	}

	// The leave grace, then up to 10 s to drain and stop.
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.LeaveGrace+10*time.Second)
	defer cancel()
	return d.Shutdown(stopCtx)
}
