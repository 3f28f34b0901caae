package cluster

import (
	"slices"
	"strings"
	"testing"
	"time"
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

// A server presenting another cluster secret's route password is refused
// a route, even when it dials the route port directly (discovery, which
// already keeps such nodes apart, is bypassed here).
func TestRouteNeedsTheSecretsPassword(t *testing.T) {
	start := func(name, secret string) *Server {
		t.Helper()
		s, err := StartServer(ServerConfig{
			Name: name, Cluster: "test",
			ClientHost: "127.0.0.1", ClientPort: -1,
			RouteHost: "127.0.0.1", RoutePort: -1,
			RouteUser: RouteUser, RoutePassword: DerivePassword(secret, "test", "route"),
			PingInterval: time.Second, MaxPingsOut: 2,
			Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	a := start("a", "right")
	b := start("b", "right")
	x := start("x", "wrong")

	if err := b.SetRoutes([]string{a.RouteURL()}); err != nil {
		t.Fatal(err)
	}
	if err := x.SetRoutes([]string{a.RouteURL()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b to route to a", func() bool { return slices.Equal(a.RemoteNames(), []string{"b"}) })

	// x keeps dialling every second; give it a few tries. a, which
	// checks the password, must never take x. x itself lists a for the
	// moment between a's INFO and a's refusal (it learns a's name before
	// the check), so on x's side only a lasting route counts.
	refusedRouteHolds(t, a, x)
}

// refusedRouteHolds checks for 2.5 s that acceptor never lists dialler as
// a route, and then that dialler does not keep one either.
func refusedRouteHolds(t *testing.T, acceptor, dialler *Server) {
	t.Helper()
	name := dialler.cfg.Name
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if got := acceptor.RemoteNames(); slices.Contains(got, name) {
			t.Fatalf("%s was given a route: %s lists %v", name, acceptor.cfg.Name, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 3*time.Second, name+" to hold no route", func() bool { return len(dialler.RemoteNames()) == 0 })
}
