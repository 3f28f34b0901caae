package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Subjects used by the cluster layer. Every subject baton uses starts with
// "baton.", so `nats sub 'baton.>'` shows all of its traffic.
const (
	// HeartbeatSubjectPrefix + node name carries that node's heartbeats.
	HeartbeatSubjectPrefix = "baton.heartbeat."
	// HeartbeatWildcard matches every node's heartbeats.
	HeartbeatWildcard = HeartbeatSubjectPrefix + "*"
	// NATSHeartbeatPrefix + node name carries the heartbeats of an
	// embedded-nats node: the membership of the NATS servers, kept apart
	// from the relays' so that both programs can run on one host under
	// the host's name.
	NATSHeartbeatPrefix = "baton.nats.heartbeat."
)

// heartbeatMsg is the JSON payload of a heartbeat. It is small and
// readable in `nats sub`; it is sent a few times a second per node, not
// per hop, so JSON's cost does not matter.
type heartbeatMsg struct {
	Node   string `json:"node"`
	Boot   string `json:"boot"` // hex; a JSON number would lose precision in other tools
	Seq    uint64 `json:"seq"`
	State  string `json:"state"` // "alive" or "left"
	Batons bool   `json:"batons"`
	Relay  bool   `json:"relay"` // the node takes batons (its relay is subscribed)
	Hops   uint64 `json:"hops"`
	Client string `json:"client,omitempty"` // client URL; relays publish there directly
}

func encodeHeartbeat(hb Heartbeat, seq uint64) []byte {
	state := "alive"
	if hb.Leaving {
		state = "left"
	}
	b, _ := json.Marshal(heartbeatMsg{
		Node:   hb.Node,
		Boot:   strconv.FormatUint(hb.Boot, 16),
		Seq:    seq,
		State:  state,
		Batons: hb.Injected,
		Relay:  hb.Relay,
		Hops:   hb.Hops,
		Client: hb.ClientURL,
	})
	return b
}

// decodeHeartbeat parses a heartbeat received on subject, which starts
// with prefix. The node name in the payload must match the subject, so a
// message cannot speak for another node by accident.
func decodeHeartbeat(prefix, subject string, data []byte) (Heartbeat, error) {
	var m heartbeatMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat: %w", err)
	}
	if subject != prefix+m.Node {
		return Heartbeat{}, fmt.Errorf("heartbeat for %q arrived on %q", m.Node, subject)
	}
	if err := ValidateName(m.Node); err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat: %w", err)
	}
	boot, err := strconv.ParseUint(m.Boot, 16, 64)
	if err != nil {
		return Heartbeat{}, fmt.Errorf("heartbeat boot id %q: %w", m.Boot, err)
	}
	var leaving bool
	switch m.State {
	case "alive":
	case "left":
		leaving = true
	default:
		return Heartbeat{}, fmt.Errorf("heartbeat state %q", m.State)
	}
	if m.Client != "" && !validClientURL(m.Client) {
		return Heartbeat{}, fmt.Errorf("heartbeat client URL %q is not nats://host:port", m.Client)
	}
	return Heartbeat{
		Node:      m.Node,
		Boot:      boot,
		Leaving:   leaving,
		Injected:  m.Batons,
		Relay:     m.Relay,
		Hops:      m.Hops,
		ClientURL: m.Client,
	}, nil
}

// validClientURL accepts only nats://<IP>:<port>: a heartbeat must not be
// able to make relays dial a host name or another scheme.
func validClientURL(s string) bool {
	rest, ok := strings.CutPrefix(s, "nats://")
	if !ok {
		return false
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || net.ParseIP(host) == nil {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p < 65536
}
