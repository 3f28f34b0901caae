// Command notjoining stands in for a broken batond build in the rollout
// test: it starts, stays up and serves /status, but lists only itself,
// as a node would whose discovery is broken. A check that only asked
// "is the process running" or "does /status answer" would pass it; the
// role's check (the node must list the members it listed before the
// restart) must not.
//
// It opens no socket but the status listener, so it sends nothing
// anywhere.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	node := os.Getenv("BATON_NODE_NAME")
	addr := os.Getenv("BATON_HTTP_ADDR")
	if node == "" || addr == "" {
		fmt.Fprintln(os.Stderr, "notjoining: BATON_NODE_NAME and BATON_HTTP_ADDR must be set")
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"node":    node,
			"members": []string{node},
			"hops":    0,
			"version": "notjoining",
		})
	})
	srv := &http.Server{Addr: addr, Handler: mux}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "notjoining:", err)
		os.Exit(1)
	}
}
