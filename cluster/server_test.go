package cluster

import (
	"strings"
	"testing"
)

// Route URLs carry the route password, which is derived from the secret;
// NATS logs them when routes change.
func TestNATSLogRedactsCredentials(t *testing.T) {
	got := redact("Removed route %s", []any{"nats-route://baton-route:74da52bde29d@127.0.0.1:35643"})
	if strings.Contains(got, "74da52bde29d") || !strings.Contains(got, "nats-route://[REDACTED]@127.0.0.1:35643") {
		t.Errorf("redacted line %q", got)
	}
	if got := redact("plain %d", []any{3}); got != "plain 3" {
		t.Errorf("line without credentials changed: %q", got)
	}
}
