// Package daemon runs one baton node: the cluster layer, the relay and the
// HTTP status endpoint, configured from BATON_* environment variables. It
// also runs the single-machine demo. cmd/batond only wires it to the
// process: arguments, signals and exit codes.
package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/relay"
	"github.com/kelseyhightower/envconfig"
)

// EnvPrefix is the prefix of every configuration variable.
const EnvPrefix = "BATON"

// HTTPOff as BATON_HTTP_ADDR turns the status endpoint off.
const HTTPOff = "off"

// Config is the whole configuration of a node. Every field is read from
// the environment variable BATON_<envconfig name>; .env.example lists
// them all with their defaults and must change with this struct.
type Config struct {
	NodeName    string `envconfig:"NODE_NAME"`
	ClusterName string `envconfig:"CLUSTER_NAME" default:"baton"`
	Secret      string `envconfig:"SECRET"`

	MulticastAddr string   `envconfig:"MULTICAST_ADDR" default:"239.255.100.100"`
	MulticastPort int      `envconfig:"MULTICAST_PORT" default:"45892"`
	MulticastIF   string   `envconfig:"MULTICAST_IF"`
	MulticastTTL  int      `envconfig:"MULTICAST_TTL" default:"1"`
	Seeds         []string `envconfig:"SEEDS"`

	HTTPAddr    string `envconfig:"HTTP_ADDR" default:":8380"`
	NATSListen  string `envconfig:"NATS_LISTEN" default:"0.0.0.0:4222"`
	RouteListen string `envconfig:"ROUTE_LISTEN" default:"0.0.0.0:6222"`
	Advertise   string `envconfig:"ADVERTISE"`
	// Mutual TLS on routes: all three PEM files, or none for plain TCP
	// (routes still need the password derived from the secret).
	RouteTLSCert string `envconfig:"ROUTE_TLS_CERT"`
	RouteTLSKey  string `envconfig:"ROUTE_TLS_KEY"`
	RouteTLSCA   string `envconfig:"ROUTE_TLS_CA"`

	Batons     int    `envconfig:"BATONS" default:"1"`
	MinNodes   int    `envconfig:"MIN_NODES" default:"2"`
	PeerChoice string `envconfig:"PEER_CHOICE" default:"random"`
	Leader     string `envconfig:"LEADER"`
	// Direct makes the relay publish each baton straight to the server
	// of the peer that receives it (over that peer's client port)
	// instead of through its own server and a route.
	Direct bool `envconfig:"DIRECT" default:"true"`

	AnnounceInterval  time.Duration `envconfig:"ANNOUNCE_INTERVAL" default:"1s"`
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"500ms"`
	SuspectAfter      time.Duration `envconfig:"SUSPECT_AFTER" default:"1500ms"`
	DeadAfter         time.Duration `envconfig:"DEAD_AFTER" default:"3s"`
	RoutePing         time.Duration `envconfig:"ROUTE_PING" default:"1s"`
	RouteGrace        time.Duration `envconfig:"ROUTE_GRACE" default:"30s"`
	LeaveGrace        time.Duration `envconfig:"LEAVE_GRACE" default:"500ms"`
	LossTimeout       time.Duration `envconfig:"LOSS_TIMEOUT" default:"2s"`

	// PProf serves Go's profiler under /debug/pprof/ on BATON_HTTP_ADDR.
	// Off by default: profiles cost CPU and reveal internals.
	PProf bool `envconfig:"PPROF" default:"false"`

	// MetricsInterval is how often the node reads its counters and
	// reports them: DogStatsD (configured by the DD_* variables, see
	// internal/metrics), GET /metrics and the summary log line.
	MetricsInterval time.Duration `envconfig:"METRICS_INTERVAL" default:"10s"`

	LogFormat string `envconfig:"LOG_FORMAT" default:"text"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info"`

	// --- external NATS (issue 5) ---
	// NATSURL makes batond use the NATS server there (an embedded-nats
	// beside it) instead of embedding one: no server, discovery or
	// routes of its own, only membership and the relay over a client
	// connection. Empty: embed the server.
	NATSURL string `envconfig:"NATS_URL"`
}

// LoadConfig reads the configuration from the environment and validates
// it. Errors name the variable at fault.
//
// A variable set to the empty string counts as unset and takes its
// default, since env files and templates often write NAME= for "no value".
func LoadConfig() (Config, error) {
	var c Config
	if err := loadEnv(&c); err != nil {
		return c, err
	}
	if c.NodeName == "" {
		name, err := hostNodeName()
		if err != nil {
			return c, err
		}
		c.NodeName = name
	}
	return c, c.Validate()
}

// loadEnv fills c from the environment. Every variable is checked first,
// strictly, and all malformed ones are reported together: envconfig
// alone would stop at the first and would read 010 as octal (8) and 0x10
// as hexadecimal.
func loadEnv(c *Config) error {
	unsetEmpty(EnvPrefix + "_")
	if err := checkSyntax(reflect.TypeOf(*c)); err != nil {
		return err
	}
	if err := envconfig.Process(EnvPrefix, c); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// decimal has no leading zero, which envconfig would read as octal.
var decimal = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// checkSyntax checks the form of every set variable of the struct type t.
func checkSyntax(t reflect.Type) error {
	var errs []error
	for i := range t.NumField() {
		f := t.Field(i)
		name := EnvPrefix + "_" + f.Tag.Get("envconfig")
		v, ok := os.LookupEnv(name)
		if !ok {
			continue
		}
		switch {
		case f.Type == reflect.TypeFor[time.Duration]():
			if _, err := time.ParseDuration(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a duration (write it like 500ms, 2s or 1m)", name, v))
			}
		case f.Type.Kind() == reflect.Int:
			if !decimal.MatchString(v) {
				errs = append(errs, fmt.Errorf("%s=%q: not a whole number in decimal, without leading zeros", name, v))
			}
		case f.Type.Kind() == reflect.Bool:
			if _, err := strconv.ParseBool(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not true or false", name, v))
			}
		}
	}
	return errors.Join(errs...)
}

// UnknownVariables returns the set BATON_* variables that no setting
// reads, sorted: most likely typos, which would otherwise silently leave
// the setting at its default (a mistyped BATON_MULTICAST_IF falls back to
// the interface of the default route).
func UnknownVariables() []string {
	known := map[string]bool{}
	rt := reflect.TypeOf(Config{})
	for i := range rt.NumField() {
		known[EnvPrefix+"_"+rt.Field(i).Tag.Get("envconfig")] = true
	}
	var unknown []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") && !known[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	return unknown
}

// unsetEmpty removes the process's empty variables that start with
// prefix. envconfig would otherwise parse "" (and fail for numbers).
func unsetEmpty(prefix string) {
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		if value == "" && strings.HasPrefix(name, prefix) {
			os.Unsetenv(name)
		}
	}
}

// hostNodeName derives the default node name from the host name: its
// first label, since dots cannot appear in a NATS subject token.
func hostNodeName() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("BATON_NODE_NAME: not set and the host name is unknown: %w", err)
	}
	name, _, _ := strings.Cut(host, ".")
	if err := cluster.ValidateName(name); err != nil {
		return "", fmt.Errorf("BATON_NODE_NAME: not set, and the host name cannot serve: %w", err)
	}
	return name, nil
}

// Validate checks every setting and reports all problems at once.
func (c Config) Validate() error {
	var errs []error

	if err := cluster.ValidateName(c.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("BATON_NODE_NAME: %w", err))
	}
	if err := cluster.ValidateName(c.ClusterName); err != nil {
		errs = append(errs, fmt.Errorf("BATON_CLUSTER_NAME: %w", err))
	}
	if c.Secret == "" {
		errs = append(errs, errors.New("BATON_SECRET: required: every node of a cluster needs the same secret (try: openssl rand -hex 16)"))
	}

	if ip := net.ParseIP(c.MulticastAddr); ip == nil || ip.To4() == nil || !ip.IsMulticast() {
		errs = append(errs, fmt.Errorf("BATON_MULTICAST_ADDR: %q is not an IPv4 multicast address (use 239.0.0.0/8, administratively scoped)", c.MulticastAddr))
	}
	errs = appendIf(errs, checkPort("BATON_MULTICAST_PORT", c.MulticastPort, false))
	if c.MulticastTTL < 1 || c.MulticastTTL > 255 {
		errs = append(errs, fmt.Errorf("BATON_MULTICAST_TTL: must be 1 to 255, got %d", c.MulticastTTL))
	}
	if _, err := c.seedAddrs(); err != nil {
		errs = append(errs, err)
	}

	if c.HTTPAddr != HTTPOff {
		errs = appendIf(errs, checkListen("BATON_HTTP_ADDR", c.HTTPAddr))
	}
	errs = appendIf(errs, checkListen("BATON_NATS_LISTEN", c.NATSListen))
	errs = appendIf(errs, checkListen("BATON_ROUTE_LISTEN", c.RouteListen))
	if c.Advertise != "" && net.ParseIP(c.Advertise) == nil {
		errs = append(errs, fmt.Errorf("BATON_ADVERTISE: %q is not an IP address", c.Advertise))
	}

	if set := c.RouteTLSCert != "" || c.RouteTLSKey != "" || c.RouteTLSCA != ""; set &&
		(c.RouteTLSCert == "" || c.RouteTLSKey == "" || c.RouteTLSCA == "") {
		errs = append(errs, errors.New("BATON_ROUTE_TLS_CERT, BATON_ROUTE_TLS_KEY, BATON_ROUTE_TLS_CA: mutual TLS on routes needs all three files, or none"))
	}

	if c.Batons < 0 || c.Batons > 1_000_000 {
		errs = append(errs, fmt.Errorf("BATON_BATONS: must be 0 to 1000000, got %d", c.Batons))
	}
	if c.MinNodes < 1 {
		errs = append(errs, fmt.Errorf("BATON_MIN_NODES: must be at least 1, got %d", c.MinNodes))
	}
	if _, err := relay.ParseStrategy(c.PeerChoice); err != nil {
		errs = append(errs, fmt.Errorf("BATON_PEER_CHOICE: %w", err))
	}
	if c.Leader != "" {
		if err := cluster.ValidateName(c.Leader); err != nil {
			errs = append(errs, fmt.Errorf("BATON_LEADER: %w", err))
		}
	}

	errs = append(errs, c.validateTimes()...)
	if c.NATSURL != "" {
		errs = appendIf(errs, checkNATSURL(c.NATSURL))
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("BATON_LOG_FORMAT: must be text or json, got %q", c.LogFormat))
	}
	return errors.Join(errs...)
}

func (c Config) validateTimes() []error {
	var errs []error
	// Lower bounds keep a typo (1ns) from turning a timer into a busy
	// loop or a packet storm.
	atLeast := []struct {
		name     string
		d, least time.Duration
	}{
		{"BATON_ANNOUNCE_INTERVAL", c.AnnounceInterval, 100 * time.Millisecond},
		{"BATON_HEARTBEAT_INTERVAL", c.HeartbeatInterval, 10 * time.Millisecond},
		{"BATON_ROUTE_PING", c.RoutePing, 100 * time.Millisecond},
		{"BATON_ROUTE_GRACE", c.RouteGrace, time.Second},
	}
	for _, p := range atLeast {
		if p.d < p.least {
			errs = append(errs, fmt.Errorf("%s: must be at least %v, got %v", p.name, p.least, p.d))
		}
	}
	if c.LossTimeout < time.Second && c.LossTimeout != 0 {
		errs = append(errs, fmt.Errorf("BATON_LOSS_TIMEOUT: must be at least 1s (progress is reported every 200ms), or 0 to turn recovery off; got %v", c.LossTimeout))
	}
	// Metrics: at least 100ms, so that a typo cannot turn reporting into
	// a busy loop; at most an hour, so that a summary still comes.
	if c.MetricsInterval < 100*time.Millisecond || c.MetricsInterval > time.Hour {
		errs = append(errs, fmt.Errorf("BATON_METRICS_INTERVAL: must be 100ms to 1h, got %v", c.MetricsInterval))
	}
	if c.LeaveGrace < 0 || c.LeaveGrace > time.Minute {
		errs = append(errs, fmt.Errorf("BATON_LEAVE_GRACE: must be 0 to 1m, got %v", c.LeaveGrace))
	}
	if c.SuspectAfter < 2*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("BATON_SUSPECT_AFTER: must be at least twice BATON_HEARTBEAT_INTERVAL (%v), got %v", c.HeartbeatInterval, c.SuspectAfter))
	}
	if c.DeadAfter <= c.SuspectAfter {
		errs = append(errs, fmt.Errorf("BATON_DEAD_AFTER: must be longer than BATON_SUSPECT_AFTER (%v), got %v", c.SuspectAfter, c.DeadAfter))
	}
	return errs
}

func appendIf(errs []error, err error) []error {
	if err != nil {
		return append(errs, err)
	}
	return errs
}

func checkPort(name string, port int, zeroOK bool) error {
	if (port == 0 && zeroOK) || (port >= 1 && port <= 65535) {
		return nil
	}
	return fmt.Errorf("%s: must be a port number from 1 to 65535, got %d", name, port)
}

// checkListen validates a host:port listen address; port 0 picks a free
// port.
func checkListen(name, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", name, addr, err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("%s: host %q is not an IP address", name, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("%s: port %q is not a number", name, port)
	}
	return checkPort(name, p, true)
}

// checkNATSURL validates BATON_NATS_URL: nats://host[:port], without
// credentials, which derive from the secret.
func checkNATSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("BATON_NATS_URL: %q is not a URL: %w", raw, err)
	}
	switch {
	case u.Scheme != "nats":
		return fmt.Errorf("BATON_NATS_URL: %q: want nats://host:port (only plain nats:// is supported)", raw)
	case u.User != nil:
		return errors.New("BATON_NATS_URL: leave the user and password out of the URL: batond logs in with the users derived from BATON_SECRET")
	case u.Hostname() == "":
		return fmt.Errorf("BATON_NATS_URL: %q has no host", raw)
	case u.Path != "" && u.Path != "/", u.RawQuery != "":
		return fmt.Errorf("BATON_NATS_URL: %q: want nats://host:port, nothing after the port", raw)
	}
	if port := u.Port(); port != "" {
		p, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("BATON_NATS_URL: port %q is not a number", port)
		}
		return checkPort("BATON_NATS_URL", p, false)
	}
	return nil
}

// natsHostPort returns the host:port of a validated BATON_NATS_URL, with
// NATS's default port when it has none.
func natsHostPort(raw string) string {
	u, _ := url.Parse(raw)
	port := u.Port()
	if port == "" {
		port = "4222"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// seedAddrs parses BATON_SEEDS: host or host:port entries, the port
// defaulting to BATON_MULTICAST_PORT. Host names are resolved once, here.
func (c Config) seedAddrs() ([]*net.UDPAddr, error) {
	var out []*net.UDPAddr
	for _, s := range c.Seeds {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		host, port := s, strconv.Itoa(c.MulticastPort)
		if h, p, err := net.SplitHostPort(s); err == nil {
			host, port = h, p
		}
		addr, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("BATON_SEEDS: entry %q: %w", s, err)
		}
		if addr.Port == 0 {
			return nil, fmt.Errorf("BATON_SEEDS: entry %q: port 0", s)
		}
		out = append(out, addr)
	}
	return out, nil
}

// LogValue lists the effective settings for the start-up log line with
// the secret redacted.
func (c Config) LogValue() slog.Value {
	secret := "(unset)"
	if c.Secret != "" {
		secret = fmt.Sprintf("(redacted, %d chars)", len(c.Secret))
	}
	return slog.GroupValue(
		slog.String("node", c.NodeName),
		slog.String("cluster", c.ClusterName),
		slog.String("secret", secret),
		slog.String("multicast", net.JoinHostPort(c.MulticastAddr, strconv.Itoa(c.MulticastPort))),
		slog.String("multicast_if", c.MulticastIF),
		slog.Int("multicast_ttl", c.MulticastTTL),
		slog.Any("seeds", c.Seeds),
		slog.String("http", c.HTTPAddr),
		slog.String("nats", c.NATSListen),
		slog.String("routes", c.RouteListen),
		slog.String("advertise", c.Advertise),
		slog.Int("batons", c.Batons),
		slog.Int("min_nodes", c.MinNodes),
		slog.String("peer_choice", c.PeerChoice),
		slog.String("leader", c.Leader),
		slog.Duration("announce", c.AnnounceInterval),
		slog.Duration("heartbeat", c.HeartbeatInterval),
		slog.Duration("suspect_after", c.SuspectAfter),
		slog.Duration("dead_after", c.DeadAfter),
		slog.Duration("loss_timeout", c.LossTimeout),
		slog.Duration("route_ping", c.RoutePing),
		slog.Duration("route_grace", c.RouteGrace),
		slog.Duration("leave_grace", c.LeaveGrace),
		slog.Bool("direct", c.Direct),
		slog.Duration("metrics_interval", c.MetricsInterval),
		slog.String("log", c.LogFormat+"/"+c.LogLevel),
		slog.String("nats_url", c.NATSURL),
	)
}

// NewLogger returns the logger BATON_LOG_FORMAT and BATON_LOG_LEVEL ask for.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := ParseLogLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// ParseLogLevel reads BATON_LOG_LEVEL.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("BATON_LOG_LEVEL: %q is not debug, info, warn or error", s)
	}
	return l, nil
}

// routeTLS loads the route TLS files, when set, into the configuration of
// cluster.MutualTLS; errors name the variable whose file is at fault.
func (c Config) routeTLS() (*tls.Config, error) {
	if c.RouteTLSCert == "" {
		return nil, nil // Validate made sure the three go together
	}
	cert, err := tls.LoadX509KeyPair(c.RouteTLSCert, c.RouteTLSKey)
	if err != nil {
		return nil, fmt.Errorf("BATON_ROUTE_TLS_CERT, BATON_ROUTE_TLS_KEY: %w", err)
	}
	pem, err := os.ReadFile(c.RouteTLSCA)
	if err != nil {
		return nil, fmt.Errorf("BATON_ROUTE_TLS_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("BATON_ROUTE_TLS_CA: no PEM certificate in %s", c.RouteTLSCA)
	}
	return cluster.MutualTLS(cert, pool, c.ClusterName), nil
}
