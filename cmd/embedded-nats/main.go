// Command embedded-nats runs a NATS server that forms a cluster with its
// peers on its own, by authenticated multicast discovery: batond without
// the relay. It is configured by the same BATON_* variables as batond.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/baton-relay/baton/internal/daemon"
)

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "version" {
			fmt.Println("embedded-nats", daemon.Version)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: embedded-nats [version]  (configured by BATON_* environment variables)")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	context.AfterFunc(ctx, stop) // a second signal stops at once
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedded-nats:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := daemon.LoadConfig()
	if err != nil {
		return err
	}
	log, err := daemon.NewLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	return daemon.RunClusterOnly(ctx, cfg, log)
}
