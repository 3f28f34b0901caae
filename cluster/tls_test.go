package cluster

import (
	"crypto/tls"
	"slices"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/testpki"
)

// With mutual TLS on routes, two nodes with certificates from the
// cluster's CA form a route; a server with a certificate from another CA,
// and one speaking plain TCP, are refused, although both present the
// right route password.
func TestRouteMutualTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "cluster CA"), testpki.NewCA(t, "another CA")
	start := func(name string, tlsConf *tls.Config) *Server {
		t.Helper()
		s, err := StartServer(ServerConfig{
			Name: name, Cluster: "test",
			ClientHost: "127.0.0.1", ClientPort: -1,
			RouteHost: "127.0.0.1", RoutePort: -1,
			RouteUser: RouteUser, RoutePassword: DerivePassword("secret", "test", "route"),
			RouteTLS:     tlsConf,
			PingInterval: time.Second, MaxPingsOut: 2,
			Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	a := start("a", MutualTLS(ca.Issue(t, "a", "test"), ca.Pool, "test"))
	b := start("b", MutualTLS(ca.Issue(t, "b", "test"), ca.Pool, "test"))
	// x trusts the cluster's CA, so only a's check of x's certificate
	// can refuse it.
	x := start("x", MutualTLS(other.Issue(t, "x", "test"), ca.Pool, "test"))
	plain := start("plain", nil)

	for _, s := range []*Server{b, x, plain} {
		if err := s.SetRoutes([]string{a.RouteURL()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "b to route to a over mutual TLS", func() bool { return slices.Equal(a.RemoteNames(), []string{"b"}) })

	// The refused servers redial every second; give them a few tries.
	refusedRouteHolds(t, a, x)
	refusedRouteHolds(t, a, plain)
	routes := a.NATS().NumRoutes()
	if routes != 1 {
		t.Errorf("a has %d routes, want 1", routes)
	}
}
