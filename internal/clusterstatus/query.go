package clusterstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Options shape a Query.
type Options struct {
	// Timeout is how long to wait for the nodes' status answers, and
	// then for each node's round-trip measurement on top of its pings.
	Timeout time.Duration
	// Pings per pair of nodes for the round-trip matrix; 0 skips it.
	Pings int
}

// Result is what the cluster said.
type Result struct {
	Via     string       `json:"via"`     // the server the query was sent to
	Nodes   []NodeStatus `json:"nodes"`   // the nodes that answered, by name
	Missing []string     `json:"missing"` // named alive by some node, but silent
	// RTT[from][to] is from's measurement of its round trip to to.
	RTT map[string]map[string]Probe `json:"rtt,omitempty"`
	// RTTErrors says, by node, why its measurement is missing.
	RTTErrors map[string]string `json:"rtt_errors,omitempty"`
}

// ErrNoAnswer is wrapped by Query's error when no node answered at all.
var ErrNoAnswer = errors.New("no node answered")

// Connect opens a client connection to one node for a Query, and turns
// the two ways that can fail into errors that say what to check.
func Connect(url, user, password string, timeout time.Duration) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.UserInfo(user, password),
		nats.Name("batond status"),
		nats.Timeout(timeout),
		nats.NoReconnect(),
	)
	switch {
	case err == nil:
		return nc, nil
	case errors.Is(err, nats.ErrAuthorization):
		return nil, fmt.Errorf("%s refused user %q: BATON_SECRET or BATON_CLUSTER_NAME differ from the cluster's (%w)", url, user, err)
	}
	return nil, fmt.Errorf("cannot reach %s (is batond running there, listening on that port? see BATON_NATS_LISTEN): %w", url, err)
}

// Query asks every node of the cluster for its status and, with
// opt.Pings, for its round trips to every other node that answered.
// Nodes that some node lists as alive but that do not answer within
// opt.Timeout are listed in Result.Missing; that is not an error. Query
// fails when no node answers at all.
func Query(ctx context.Context, nc *nats.Conn, opt Options) (*Result, error) {
	res := &Result{Via: nc.ConnectedServerName()}
	nodes, err := gather(ctx, nc, opt.Timeout)
	if err != nil {
		return nil, err
	}
	res.Nodes = nodes
	res.Missing = missing(nodes)
	if opt.Pings > 0 && len(nodes) > 1 {
		res.RTT, res.RTTErrors = measureAll(ctx, nc, nodes, opt)
	}
	return res, nil
}

// gather sends one request on StatusSubject and collects the answers
// until every node that any answer lists as alive has answered, or the
// timeout passes.
func gather(ctx context.Context, nc *nats.Conn, timeout time.Duration) ([]NodeStatus, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", inbox, err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(StatusSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("request %s: %w", StatusSubject, err)
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	byName := make(map[string]NodeStatus)
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: nothing subscribes to %s on %s; is it a baton node (not embedded-nats), and is this the application user?",
				ErrNoAnswer, StatusSubject, nc.ConnectedServerName())
		}
		if err != nil {
			break // the timeout, or the caller gave up: report what came
		}
		var st NodeStatus
		if err := json.Unmarshal(m.Data, &st); err != nil || st.Node == "" {
			continue // not a status: someone else answering on the subject
		}
		byName[st.Node] = st
		if len(missing(values(byName))) == 0 {
			break
		}
	}
	if len(byName) == 0 {
		return nil, fmt.Errorf("%w on %s within %v", ErrNoAnswer, StatusSubject, timeout)
	}
	return values(byName), nil
}

// values returns the statuses sorted by node name.
func values(m map[string]NodeStatus) []NodeStatus {
	out := make([]NodeStatus, 0, len(m))
	for _, st := range m {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// missing returns the nodes that some answer lists as alive but that did
// not answer themselves, sorted.
func missing(nodes []NodeStatus) []string {
	answered := make(map[string]bool, len(nodes))
	for _, st := range nodes {
		answered[st.Node] = true
	}
	var out []string
	for _, st := range nodes {
		for _, name := range st.Members {
			if !answered[name] && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// measureAll asks each node in turn (so that no two measurements run at
// once and slow each other) to ping every other node that answered.
func measureAll(ctx context.Context, nc *nats.Conn, nodes []NodeStatus, opt Options) (map[string]map[string]Probe, map[string]string) {
	targets := make([]string, len(nodes))
	for i, st := range nodes {
		targets[i] = st.Node
	}
	// A target that does not answer costs one pingTimeout (it is not
	// pinged again); answered pings take milliseconds, covered by the
	// extra second.
	within := time.Duration(len(targets))*pingTimeout + time.Second
	within = min(within, MaxWithin)
	req, _ := json.Marshal(RTTRequest{Targets: targets, Pings: opt.Pings, WithinMS: within.Milliseconds()})

	rtt := make(map[string]map[string]Probe)
	errs := make(map[string]string)
	for _, from := range targets {
		rctx, cancel := context.WithTimeout(ctx, within+opt.Timeout)
		m, err := nc.RequestWithContext(rctx, RTTSubjectPrefix+from, req)
		cancel()
		if err != nil {
			errs[from] = fmt.Sprintf("no answer on %s%s within %v: %v", RTTSubjectPrefix, from, within+opt.Timeout, err)
			continue
		}
		var reply RTTReply
		switch err := json.Unmarshal(m.Data, &reply); {
		case err != nil:
			errs[from] = fmt.Sprintf("bad answer on %s%s: %v", RTTSubjectPrefix, from, err)
		case reply.Error != "":
			errs[from] = reply.Error
		default:
			rtt[from] = reply.RTT
		}
	}
	return rtt, errs
}
