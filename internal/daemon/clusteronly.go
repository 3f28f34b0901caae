package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/baton-relay/baton/cluster"
)

// ClusterOnly is a running embedded-nats: the cluster layer without the
// relay. A NATS server that finds its peers by multicast (and
// BATON_SEEDS), keeps the routes and a membership of the embedded-nats
// servers (on subjects of its own, NATSHeartbeatPrefix), and takes the
// user's programs on its client port with the users derived from
// BATON_SECRET. It reads the same BATON_* variables as batond and ignores
// the relay's (batons, peer choice, leader, direct, BATON_NATS_URL), so
// one env file can serve both programs on a host.
//
// StartClusterOnly starts the node and the status endpoint; Shutdown
// says goodbye and stops; Close stops at once, as a crash would.
type ClusterOnly struct {
	cfg     Config
	log     *slog.Logger
	started time.Time
	iface   string
	node    *cluster.Node
	http    *http.Server
	ln      net.Listener
	serve   chan error // result of http.Serve
}

// StartClusterOnly validates cfg and starts every part. On error,
// whatever was started is stopped again.
func StartClusterOnly(cfg Config, log *slog.Logger) (_ *ClusterOnly, err error) {
	cfg.NATSURL = "" // this program is the server
	ncfg, err := prepare(cfg, log, "embedded-nats")
	if err != nil {
		return nil, err
	}
	ncfg.HeartbeatPrefix = cluster.NATSHeartbeatPrefix

	c := &ClusterOnly{cfg: cfg, log: log, started: time.Now(), iface: ncfg.Interface.Name}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if cfg.HTTPAddr != HTTPOff {
		if c.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("BATON_HTTP_ADDR: %w", err)
		}
	}
	if err := checkListeners(cfg); err != nil {
		return nil, err
	}

	if c.node, err = cluster.StartNode(ncfg); err != nil {
		return nil, err
	}
	if c.ln != nil {
		c.http = &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 5 * time.Second}
		c.serve = make(chan error, 1)
		go func() { c.serve <- c.http.Serve(c.ln) }()
		log.Info("status endpoint", "url", "http://"+c.ln.Addr().String()+"/status")
	}
	log.Info("nats ready", "client_url", c.node.ClientURL(), "route_url", c.node.RouteURL())
	return c, nil
}

// Node returns the cluster node.
func (c *ClusterOnly) Node() *cluster.Node { return c.node }

// HTTPAddr returns the bound status address, or "" without one.
func (c *ClusterOnly) HTTPAddr() string {
	if c.ln == nil {
		return ""
	}
	return c.ln.Addr().String()
}

// Shutdown tells the cluster this server is leaving (peers mark it left
// and drop their route to it), then stops. ctx bounds the whole stop.
func (c *ClusterOnly) Shutdown(ctx context.Context) error {
	var errs []error
	c.log.Info("leaving the cluster")
	if err := c.node.Leave(ctx); err != nil {
		errs = append(errs, fmt.Errorf("leave: %w", err))
	}
	if c.http != nil {
		if err := c.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
	}
	c.node.Close()
	c.log.Info("stopped")
	return errors.Join(errs...)
}

// Close stops at once without a goodbye. Safe on a partly started one.
func (c *ClusterOnly) Close() {
	if c.node != nil {
		c.node.Close()
	}
	if c.http != nil {
		c.http.Close()
	} else if c.ln != nil {
		c.ln.Close()
	}
}

// RunClusterOnly runs embedded-nats until ctx is done, then stops
// cleanly. Like batond, it waits for an address on BATON_MULTICAST_IF
// rather than failing into a restart loop.
func RunClusterOnly(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := waitForAddress(ctx, cfg, log); err != nil || ctx.Err() != nil {
		return err
	}
	c, err := StartClusterOnly(cfg, log)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-c.serve: // nil channel without an endpoint
		c.Close()
		return fmt.Errorf("status endpoint: %w", err)
	case err := <-c.node.Fatal():
		c.Close()
		return err
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Shutdown(stopCtx)
}

// ClusterStatus is the JSON document embedded-nats serves at GET
// /status: the cluster part of batond's, without the relay. node and
// members have the same meaning as in batond's (members here are the
// embedded-nats servers).
type ClusterStatus struct {
	Node          string                 `json:"node"`
	Members       []string               `json:"members"` // alive members, self included, sorted
	Cluster       string                 `json:"cluster"`
	Version       string                 `json:"version"`
	Boot          string                 `json:"boot"`
	UptimeSeconds float64                `json:"uptime_seconds"`
	MemberStates  []MemberStatus         `json:"member_states"`
	Routes        []string               `json:"routes"` // peers with a NATS route
	RouteURL      string                 `json:"route_url"`
	ClientURL     string                 `json:"client_url"`
	Interface     string                 `json:"interface"`
	Clients       int                    `json:"clients"` // client connections, this server's own included
	Discovery     cluster.DiscoveryStats `json:"discovery"`
	BadHeartbeats uint64                 `json:"bad_heartbeats"`
}

// Status returns this server's current status.
func (c *ClusterOnly) Status() ClusterStatus {
	now := time.Now()
	v := c.node.View()
	st := ClusterStatus{
		Node:          c.cfg.NodeName,
		Members:       v.Alive,
		Cluster:       c.cfg.ClusterName,
		Version:       Version,
		Boot:          formatBoot(c.node.Boot()),
		UptimeSeconds: now.Sub(c.started).Seconds(),
		Routes:        c.node.Routes(),
		RouteURL:      c.node.RouteURL(),
		ClientURL:     c.node.ClientURL(),
		Interface:     c.iface,
		Clients:       c.node.Server().NATS().NumClients(),
		Discovery:     c.node.DiscoveryStats(),
		BadHeartbeats: c.node.BadHeartbeats(),
	}
	for _, m := range v.Members {
		ms := MemberStatus{Name: m.Name, State: m.State}
		if m.Name != c.cfg.NodeName {
			ago := now.Sub(m.LastSeen).Milliseconds()
			ms.LastHeartbeatMS = &ago
		}
		st.MemberStates = append(st.MemberStates, ms)
	}
	return st
}

// Handler serves the status endpoint.
func (c *ClusterOnly) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(c.Status())
	})
	return mux
}

// Credentials are the NATS client users of a cluster, derived from its
// secret: every node computes the same ones, and nothing stores them.
type Credentials struct {
	User, Password       string // application account: batons, heartbeats
	SysUser, SysPassword string // system account: `nats server` commands
}

// ClientCredentials derives the client users of cfg's cluster.
func ClientCredentials(cfg Config) Credentials {
	return Credentials{
		User:        cluster.ClientUser,
		Password:    cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "client"),
		SysUser:     cluster.SysUser,
		SysPassword: cluster.DerivePassword(cfg.Secret, cfg.ClusterName, "sys"),
	}
}
