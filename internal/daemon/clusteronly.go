package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/baton-relay/baton/cluster"
)

// RunClusterOnly runs the cluster layer without the relay: a NATS server
// that finds its peers by multicast and keeps the mesh and membership,
// for programs of the user's own. It uses the same BATON_* variables;
// the relay's (batons, peer choice) are ignored. It stops cleanly when
// ctx is done.
//
// TODO(baton): a status endpoint and the credentials for client accounts
// come with the issue that completes embedded-nats; for now the client
// port accepts anonymous connections, as batond's does.
func RunClusterOnly(ctx context.Context, cfg Config, log *slog.Logger) error {
	ncfg, err := prepare(cfg, log, "embedded-nats")
	if err != nil {
		return err
	}

	node, err := cluster.StartNode(ncfg)
	if err != nil {
		return err
	}
	log.Info("nats ready", "client_url", node.Server().ClientURL(), "route_url", node.Server().RouteURL())

	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = node.Leave(stopCtx)
	node.Close()
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
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
