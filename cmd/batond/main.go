// Command batond runs a baton node, or with "demo" a whole cluster on
// this machine. See README.md for its configuration (BATON_* variables).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-relay/baton/internal/daemon"
)

const usage = `usage:
  batond            run the daemon, configured by BATON_* environment variables
  batond demo       run a cluster of several nodes on this machine (no root)
  batond version    print the version

See README.md and .env.example for every variable.
`

// errUsage marks a command-line mistake; it exits with status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()

	switch {
	case err == nil:
	case errors.Is(err, errUsage):
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
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "batond", daemon.Version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
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
	nodes := fs.Int("nodes", 4, "number of nodes")
	duration := fs.Duration("duration", 20*time.Second, "how long to pass batons")
	batons := fs.Int("batons", 0, "batons in flight (default: BATON_BATONS, else 1)")
	choice := fs.String("peer-choice", "", "random, shuffle or ring (default: BATON_PEER_CHOICE, else random)")
	verbose := fs.Bool("v", false, "show the nodes' info logs (default: warnings only)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}

	level := "warn"
	if *verbose {
		level = "info"
	}
	log, err := daemon.NewLogger(stderr, "text", level)
	if err != nil {
		return err
	}
	_, err = daemon.RunDemo(ctx, daemon.DemoOptions{
		Nodes:      *nodes,
		Duration:   *duration,
		Batons:     *batons,
		PeerChoice: *choice,
		Out:        stdout,
		Log:        log,
	})
	return err
}
