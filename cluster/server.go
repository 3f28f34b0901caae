package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

// ServerConfig describes the embedded NATS server of one node.
type ServerConfig struct {
	Name    string // server name: the node name
	Cluster string // NATS cluster name

	ClientHost string // client listener host; the nats CLI connects here
	ClientPort int    // -1 picks a free port
	RouteHost  string // route listener host
	RoutePort  int    // -1 picks a free port

	// AdvertiseHost is the address peers should dial for routes. Empty
	// means NATS derives it from each route connection's remote address.
	AdvertiseHost string

	// RouteUser and RoutePassword are required of every incoming route
	// and presented on every outgoing one.
	RouteUser, RoutePassword string
	// RouteTLS, when set, makes every route use mutual TLS (MutualTLS).
	RouteTLS *tls.Config

	// ClientPassword, when set, makes the client port require a user:
	// ClientUser in the application account, where batons and heartbeats
	// live, for people and their programs; NodeUser with NodePassword in
	// the same account, for the nodes' own connections; or SysUser with
	// SysPassword in the system account, for `nats server` commands.
	// Anonymous clients are refused. Empty leaves the client port open
	// (tests of the server alone).
	ClientPassword string
	NodePassword   string
	SysPassword    string

	// PingInterval is the route keepalive. NATS's default lets a silently
	// dead peer (a Pi that lost power) hold its route for about 90 s; a
	// second or so brings that down to a few seconds.
	PingInterval time.Duration
	MaxPingsOut  int

	Logger *slog.Logger
	// LogNotices passes NATS's notice-level lines (route up and down,
	// start-up banner) to Logger at info level; otherwise at debug.
	LogNotices bool
}

// Server is a running embedded NATS server. Its route list is changed
// only through SetRoutes; in a Node, the route manager goroutine is the
// sole caller.
type Server struct {
	ns        *server.Server
	cfg       ServerConfig
	log       *natsLogger
	routeURL  string // advertised, without credentials
	clientURL string // advertised client address peers' relays dial

	mu       sync.Mutex // serialises reloads and guards template
	template *server.Options
}

// StartServer starts the server and waits until its listeners are up.
func StartServer(cfg ServerConfig) (*Server, error) {
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.ClientHost,
		Port:       cfg.ClientPort,
		NoSigs:     true, // batond owns SIGINT and SIGTERM
		Cluster: server.ClusterOpts{
			Name:         cfg.Cluster,
			Host:         cfg.RouteHost,
			Port:         cfg.RoutePort,
			Username:     cfg.RouteUser,
			Password:     cfg.RoutePassword,
			PingInterval: cfg.PingInterval,
			MaxPingsOut:  cfg.MaxPingsOut,
			// One connection per peer: the baton account is the only
			// traffic, so a pool adds dialers and duplicate-route churn
			// without adding throughput.
			PoolSize: -1,
			// Gossip-learned routes retry a few times before giving up,
			// so a short outage heals without the planner stepping in.
			ConnectRetries: 5,
		},
		// Report a failing explicit route once a minute, not every second.
		ReconnectErrorReports: 60,
	}
	if cfg.RouteTLS != nil {
		opts.Cluster.TLSConfig = cfg.RouteTLS
		opts.Cluster.TLSTimeout = 2 // seconds, NATS's default for routes
	}
	if cfg.AdvertiseHost != "" && cfg.RoutePort > 0 {
		opts.Cluster.Advertise = net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(cfg.RoutePort))
	}
	if cfg.ClientPassword != "" {
		if err := setClientAuth(opts, cfg.ClientPassword, cfg.NodePassword, cfg.SysPassword); err != nil {
			return nil, err
		}
	}

	ns, err := server.NewServer(opts.Clone())
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	lg := &natsLogger{log: cfg.Logger.With("component", "nats"), notices: cfg.LogNotices}
	ns.SetLoggerV2(lg, false, false, false)
	ns.Start()

	if err := waitReady(ns, lg, 10*time.Second); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}

	s := &Server{ns: ns, cfg: cfg, log: lg, template: opts}
	if err := s.fixAdvertise(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Client users. The names are fixed; the passwords derive from the secret.
const (
	ClientUser = "baton"
	NodeUser   = "baton-node"
	SysUser    = "sys"
	appAccount = "BATON"
	sysAccount = "SYS"
)

// NodeOnlySubjects are the subjects only nodes publish on: what the
// cluster's membership and loss recovery believe. ClientUser may read
// them but not publish there, so that holding the client credentials
// (for the nats CLI, or a program of one's own) is not enough to forge
// a heartbeat, a progress report or an epoch announcement. Batons
// themselves stay open to ClientUser: the relay checks every baton, and
// publishing a hand-made one is a way to test that.
var NodeOnlySubjects = []string{HeartbeatSubjectPrefix + ">", NATSHeartbeatPrefix + ">", "baton.progress.>", "baton.control"}

// setClientAuth creates the application and system accounts and their
// users. Passwords are stored as bcrypt hashes (NATS warns about plain
// ones); the lowest cost is enough, since the password is 128 random
// bits and not something a person chose.
func setClientAuth(opts *server.Options, clientPass, nodePass, sysPass string) error {
	app, sys := server.NewAccount(appAccount), server.NewAccount(sysAccount)
	clientPerms := &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: NodeOnlySubjects}}
	var users []*server.User
	for _, u := range []struct {
		name, pass string
		acc        *server.Account
		perms      *server.Permissions
	}{{ClientUser, clientPass, app, clientPerms}, {NodeUser, nodePass, app, nil}, {SysUser, sysPass, sys, nil}} {
		if u.pass == "" {
			continue // a user without a password is not created
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(u.pass), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("client credentials: %w", err)
		}
		users = append(users, &server.User{Username: u.name, Password: string(hash), Account: u.acc, Permissions: u.perms})
	}
	opts.Accounts = []*server.Account{app, sys}
	opts.Users = users
	opts.SystemAccount = sysAccount
	return nil
}

// waitReady waits for the server's listeners, failing as soon as the
// server reports a fatal error (a port in use) instead of after the
// whole timeout.
func waitReady(ns *server.Server, lg *natsLogger, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if msg := lg.fatal(); msg != "" {
			return fmt.Errorf("nats server did not start: %s", msg)
		}
	}
	return fmt.Errorf("nats server did not start within %v", timeout)
}

// fixAdvertise sets the advertised route address once the bound port is
// known, for servers started with a random route port.
func (s *Server) fixAdvertise() error {
	addr := s.ns.ClusterAddr()
	if addr == nil {
		return errors.New("nats server has no route listener")
	}
	host := s.cfg.AdvertiseHost
	if host == "" {
		host = addr.IP.String()
	}
	hostPort := net.JoinHostPort(host, strconv.Itoa(addr.Port))
	s.routeURL = "nats-route://" + hostPort
	if ca, ok := s.ns.Addr().(*net.TCPAddr); ok {
		s.clientURL = "nats://" + net.JoinHostPort(host, strconv.Itoa(ca.Port))
	}

	if s.cfg.AdvertiseHost == "" || s.template.Cluster.Advertise != "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.template.Clone()
	next.Cluster.Advertise = hostPort
	if err := s.ns.ReloadOptions(next.Clone()); err != nil {
		return fmt.Errorf("set route advertise address %s: %w", hostPort, err)
	}
	s.template = next
	return nil
}

// RouteURL is the route address this node announces, without credentials.
func (s *Server) RouteURL() string { return s.routeURL }

// ClientURL is the advertised address of the client listener: the
// advertise host with the bound client port.
func (s *Server) ClientURL() string { return s.clientURL }

// NATS returns the embedded server, for inspection.
func (s *Server) NATS() *server.Server { return s.ns }

// SetRoutes replaces the explicit route list. URLs are given without
// credentials; the route credentials are added here.
func (s *Server) SetRoutes(routeURLs []string) error {
	routes := make([]*url.URL, 0, len(routeURLs))
	for _, raw := range routeURLs {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("route URL %q: %w", raw, err)
		}
		if s.cfg.RouteUser != "" {
			u.User = url.UserPassword(s.cfg.RouteUser, s.cfg.RoutePassword)
		}
		routes = append(routes, u)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.template.Clone()
	next.Routes = routes
	if err := s.ns.ReloadOptions(next.Clone()); err != nil {
		return fmt.Errorf("reload nats routes: %w", err)
	}
	s.template = next
	return nil
}

// ExplicitRoutes returns the configured route URLs, without credentials.
func (s *Server) ExplicitRoutes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.template.Routes))
	for _, u := range s.template.Routes {
		out = append(out, "nats-route://"+u.Host)
	}
	return out
}

// RemoteNames returns the names of the servers this one has a route to,
// sorted and without duplicates.
func (s *Server) RemoteNames() []string {
	rz, err := s.ns.Routez(nil)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(rz.Routes))
	for _, r := range rz.Routes {
		if r.RemoteName != "" {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Connect opens an in-process client connection, which skips the TCP
// leg between the client and its own server.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.InProcessServer(s.ns),
		nats.Name(name),
		nats.NoEcho(),
		nats.MaxReconnects(-1),
	}
	if s.cfg.NodePassword != "" {
		base = append(base, nats.UserInfo(NodeUser, s.cfg.NodePassword))
	}
	nc, err := nats.Connect("", append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect %s to embedded nats: %w", name, err)
	}
	return nc, nil
}

// Close shuts the server down and waits for it. Safe to call twice.
func (s *Server) Close() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// natsLogger forwards the server's printf-style log into slog. Its Fatalf
// only logs and remembers the message: NATS calls it for conditions such
// as a port in use, and the caller, not the library, decides to exit.
type natsLogger struct {
	log     *slog.Logger
	notices bool

	mu        sync.Mutex
	lastFatal string
}

func (l *natsLogger) Noticef(format string, v ...any) {
	if l.notices {
		l.log.Info(redact(format, v))
		return
	}
	l.log.Debug(redact(format, v))
}

func (l *natsLogger) Warnf(format string, v ...any)  { l.log.Warn(redact(format, v)) }
func (l *natsLogger) Errorf(format string, v ...any) { l.log.Error(redact(format, v)) }
func (l *natsLogger) Debugf(format string, v ...any) { l.log.Debug(redact(format, v)) }
func (l *natsLogger) Tracef(format string, v ...any) { l.log.Debug(redact(format, v)) }

// userinfo matches the credentials of a URL, as NATS prints explicit
// routes ("Removed route nats-route://user:password@host:port").
var userinfo = regexp.MustCompile(`://[^/@\s]+@`)

// redact formats a NATS log line with any URL credentials masked: the
// route password is derived from the cluster secret and must not reach
// the logs.
func redact(format string, v []any) string {
	return userinfo.ReplaceAllString(fmt.Sprintf(format, v...), "://[REDACTED]@")
}

func (l *natsLogger) Fatalf(format string, v ...any) {
	msg := redact(format, v)
	l.mu.Lock()
	l.lastFatal = msg
	l.mu.Unlock()
	l.log.Error(msg)
}

func (l *natsLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastFatal
}
