package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/baton-relay/baton/internal/clusterstatus"
	"github.com/baton-relay/baton/internal/daemon"
)

// runStatus is `batond status`: it connects to one node's client port
// with the application user derived from BATON_SECRET, asks the cluster
// and prints the table and round-trip matrix. Nodes that do not answer
// make it exit non-zero after printing what the others said.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "", "a node's NATS client URL (default: nats://127.0.0.1 with BATON_NATS_LISTEN's port)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the nodes' answers")
	pings := fs.Int("pings", 5, fmt.Sprintf("pings per pair of nodes for the round-trip matrix, 0 to %d (0 skips it)", clusterstatus.MaxPings))
	asJSON := fs.Bool("json", false, "print the answers as JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("status: %w", err)}
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("status: unexpected argument %q", fs.Arg(0))}
	case *timeout <= 0:
		return usageError{fmt.Errorf("status: -timeout must be positive, got %v", *timeout)}
	case *pings < 0 || *pings > clusterstatus.MaxPings:
		return usageError{fmt.Errorf("status: -pings must be 0 to %d, got %d", clusterstatus.MaxPings, *pings)}
	}

	cfg, err := daemon.LoadConfig()
	if err != nil {
		return err
	}
	url := *server
	if url == "" {
		_, port, _ := net.SplitHostPort(cfg.NATSListen)
		url = "nats://" + net.JoinHostPort("127.0.0.1", port)
	}
	creds := daemon.ClientCredentials(cfg)
	nc, err := clusterstatus.Connect(url, creds.User, creds.Password, *timeout)
	if err != nil {
		return err
	}
	defer nc.Close()

	res, err := clusterstatus.Query(ctx, nc, clusterstatus.Options{Timeout: *timeout, Pings: *pings})
	if err != nil {
		return fmt.Errorf("status via %s: %w", url, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		clusterstatus.Format(stdout, res, *timeout)
	}
	if len(res.Missing) > 0 {
		return fmt.Errorf("no answer within %v from %s", *timeout, strings.Join(res.Missing, ", "))
	}
	return nil
}
