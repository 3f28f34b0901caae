package metrics

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/DataDog/datadog-go/v5/statsd"
)

// The datadog-go library's own variables. They alone configure DogStatsD:
// an operator who already runs the Datadog agent sets them the same way
// for every program on the host.
const (
	EnvAgentHost = "DD_AGENT_HOST"
	EnvPort      = "DD_DOGSTATSD_PORT"
	EnvURL       = "DD_DOGSTATSD_URL"
)

// senderBuffers is the DogStatsD client's buffer pool and send queue, in
// payloads: several times what one interval sends.
const senderBuffers = 16

// defaultDogStatsDPort is the agent's port when only a host is given, as
// the library assumes.
const defaultDogStatsDPort = "8125"

// DogStatsDTarget reads the library's variables through getenv and says
// where metrics go, in the library's precedence (DD_DOGSTATSD_URL over
// DD_AGENT_HOST and DD_DOGSTATSD_PORT): "udp://host:port" or
// "unix:///path", or "" when none is set and DogStatsD is off.
//
// The library itself ignores a malformed DD_DOGSTATSD_URL and falls back
// to the host, or fails with an error that names no variable; checking
// here first turns such a mistake into an error naming the variable.
func DogStatsDTarget(getenv func(string) string) (string, error) {
	host, port, rawURL := getenv(EnvAgentHost), getenv(EnvPort), getenv(EnvURL)
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return "", fmt.Errorf("%s: %q is not a port number from 1 to 65535", EnvPort, port)
		}
	}
	if rawURL != "" {
		return targetFromURL(rawURL)
	}
	switch {
	case host == "" && port != "":
		return "", fmt.Errorf("%s is set but %s is not: set the agent's host too, or unset both to turn DogStatsD off", EnvPort, EnvAgentHost)
	case host == "":
		return "", nil
	case strings.HasPrefix(host, "unix://"), strings.HasPrefix(host, "unixgram://"), strings.HasPrefix(host, "unixstream://"):
		return host, nil
	case strings.Contains(host, ":"):
		// host:port, which the library takes as it is.
		if _, _, err := net.SplitHostPort(host); err != nil {
			return "", fmt.Errorf("%s: %q: %w", EnvAgentHost, host, err)
		}
		return "udp://" + host, nil
	}
	if port == "" {
		port = defaultDogStatsDPort
	}
	return "udp://" + net.JoinHostPort(host, port), nil
}

func targetFromURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %q: %w", EnvURL, raw, err)
	case u.Scheme == "unix" && u.Path != "":
		return raw, nil
	case u.Scheme == "udp" && u.Hostname() != "":
		if u.Port() == "" {
			return "udp://" + net.JoinHostPort(u.Hostname(), defaultDogStatsDPort), nil
		}
		return "udp://" + u.Host, nil
	}
	return "", fmt.Errorf("%s: %q: want udp://host[:port] or unix:///path/to/socket", EnvURL, raw)
}

// dogStatsD sends each report as DogStatsD points through the library's
// client. It is used by one goroutine, the Loop's.
//
// The client is made lazily: making it resolves the agent's host name,
// which may fail while a Pi's network is still coming up; then the next
// interval tries again instead of failing the daemon.
type dogStatsD struct {
	target string
	tags   []string // global: host and cluster
	client *statsd.Client
	// sendErrs counts failed writes, reported by the library's sender
	// goroutine; the Loop compares it between intervals.
	sendErrs atomic.Uint64
	seenErrs uint64
}

func newDogStatsD(target string, tags []string) *dogStatsD {
	return &dogStatsD{target: target, tags: tags}
}

// connect makes the client if there is none yet.
func (d *dogStatsD) connect(interval time.Duration) error {
	if d.client != nil {
		return nil
	}
	// The address "" makes the library read DD_* itself, the same
	// variables DogStatsDTarget checked.
	c, err := statsd.New("",
		statsd.WithTags(d.tags),
		// The Loop aggregates and sends once per interval; the
		// library's own aggregation would only delay the points.
		statsd.WithoutClientSideAggregation(),
		// Its telemetry would add a dozen series of its own every 10 s.
		statsd.WithoutTelemetry(),
		// An interval's points fill two or three UDP payloads. The
		// library's defaults (2048 buffers preallocated, for programs
		// that send per event) would add 3 MB to a 20 MB node.
		statsd.WithWorkersCount(1),
		statsd.WithBufferPoolSize(senderBuffers),
		statsd.WithSenderQueueSize(senderBuffers),
		// send flushes explicitly; the library's timer need not wake
		// an idle node more often than that.
		statsd.WithBufferFlushInterval(interval),
		statsd.WithErrorHandler(func(error) { d.sendErrs.Add(1) }),
	)
	if err != nil {
		return fmt.Errorf("dogstatsd client for %s: %w", d.target, err)
	}
	d.client = c
	return nil
}

// send writes the report's points and flushes them. It returns the
// number of writes that failed since the previous call.
func (d *dogStatsD) send(r Report) uint64 {
	for _, p := range Points(r) {
		// The client's errors here are only "closed client" and a
		// name with forbidden characters, which the constant names
		// rule out.
		if p.Kind == Count {
			d.client.Count(p.Name, int64(p.Value), p.Tags, 1)
		} else {
			d.client.Gauge(p.Name, p.Value, p.Tags, 1)
		}
	}
	d.client.Flush()
	n := d.sendErrs.Load()
	failed := n - d.seenErrs
	d.seenErrs = n
	return failed
}

func (d *dogStatsD) close() {
	if d.client != nil {
		d.client.Close()
	}
}
