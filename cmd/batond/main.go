// Command batond runs a baton node, or with "demo" a whole cluster on
// this machine. See README.md for its configuration (BATON_* variables).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-relay/baton/internal/daemon"
	"github.com/baton-relay/baton/relay"
)

const usage = `usage:
  batond            run the daemon, configured by BATON_* environment variables
  batond demo       run a cluster of several nodes on this machine (no root)
  batond credentials
                    print the cluster's NATS users (derived from BATON_SECRET
                    and BATON_CLUSTER_NAME) and nats CLI context commands
  batond status [-server nats://HOST:4222] [-timeout 2s] [-pings 5] [-json]
                    ask the cluster, through any one node, for every node's
                    state, rate, latency and routes, and measure the
                    round-trip time between every pair of nodes
  batond version    print the version

See README.md and .env.example for every variable.
`

// usageError is a command-line mistake; it exits with status 2 and the
// usage text.
type usageError struct{ error }

func main() {
	// SIGHUP too: a node started from an SSH session that drops should
	// leave cleanly, not vanish like a crash.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	// After the first signal, the default handling comes back, so a
	// second SIGTERM or Ctrl-C stops the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()

	switch {
	case err == nil:
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "batond:", err)
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "batond:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return runDaemon(ctx, stderr)
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "credentials":
		return runCredentials(stdout)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "batond", daemon.Version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q", args[0])}
}

func checkDemoFlags(fs *flag.FlagSet, nodes int, duration time.Duration, batons int, choice string) error {
	var set bool
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "batons" })
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case nodes < 2 || nodes > 64:
		return fmt.Errorf("-nodes must be 2 to 64, got %d", nodes)
	case duration < 3*time.Second:
		return fmt.Errorf("-duration must be at least 3s, got %v", duration)
	case set && (batons < 1 || batons > 1_000_000):
		return fmt.Errorf("-batons must be 1 to 1000000, got %d", batons)
	}
	if choice != "" {
		if _, err := relay.ParseStrategy(choice); err != nil {
			return fmt.Errorf("-peer-choice: %w", err)
		}
	}
	return nil
}

func runCredentials(stdout io.Writer) error {
	cfg, err := daemon.LoadConfig()
	if err != nil {
		return err
	}
	c := daemon.ClientCredentials(cfg)
	_, port, _ := net.SplitHostPort(cfg.NATSListen)
	fmt.Fprintf(stdout, `NATS users of cluster %q (derived from BATON_SECRET; the same on every node)

  application: user %s  password %s
  system:      user %s  password %s

For the nats CLI (replace HOST with any node):
  nats context add %s --server nats://HOST:%s --user %s --password %s --select
  nats context add %s-sys --server nats://HOST:%s --user %s --password %s
  nats sub 'baton.>'
  nats --context %s-sys server list
`, cfg.ClusterName, c.User, c.Password, c.SysUser, c.SysPassword,
		cfg.ClusterName, port, c.User, c.Password,
		cfg.ClusterName, port, c.SysUser, c.SysPassword, cfg.ClusterName)
	return nil
}

func runDaemon(ctx context.Context, stderr io.Writer) error {
	cfg, err := daemon.LoadConfig()
	if err != nil {
		return err
	}
	log, err := daemon.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	return daemon.Run(ctx, cfg, log)
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 4, "number of nodes, at least 2")
	duration := fs.Duration("duration", 20*time.Second, "how long to run, at least 3s (forming and injecting take about a second)")
	batons := fs.Int("batons", 0, "batons in flight, at least 1 (default: BATON_BATONS, else 1)")
	choice := fs.String("peer-choice", "", "random, shuffle or ring (default: BATON_PEER_CHOICE, else random)")
	verbose := fs.Bool("v", false, "show the nodes' info logs (default: warnings only)")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("demo: %w", err)}
	}
	if err := checkDemoFlags(fs, *nodes, *duration, *batons, *choice); err != nil {
		return usageError{fmt.Errorf("demo: %w", err)}
	}

	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	if *verbose {
		level.Set(slog.LevelInfo)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	_, err := daemon.RunDemo(ctx, daemon.DemoOptions{
		Nodes:      *nodes,
		Duration:   *duration,
		Batons:     *batons,
		PeerChoice: *choice,
		Out:        stdout,
		Log:        log,
		Quiet:      func() { level.Set(slog.LevelError + 4) },
	})
	return err
}
