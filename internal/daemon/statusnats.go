package daemon

import (
	"log/slog"
	"sync"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/clusterstatus"
	"github.com/nats-io/nats.go"
)

// stopper owns one goroutine: stop asks it to end and waits until it
// has. Safe to call twice, and on a stopper whose goroutine never ran.
type stopper struct {
	once sync.Once
	quit chan struct{}
	done chan struct{}
}

func (s *stopper) start(run func(quit <-chan struct{})) {
	s.quit, s.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.done)
		run(s.quit)
	}()
}

func (s *stopper) stop() {
	s.once.Do(func() {
		if s.quit != nil {
			close(s.quit)
			<-s.done
		}
	})
}

// startStatus starts what /status's rates need (a sampler goroutine) and
// the answers to `batond status` over NATS (see internal/clusterstatus).
func (d *Daemon) startStatus() error {
	d.rates = newRateTracker(RateInterval)
	d.sample(time.Now())
	d.sampler.start(func(quit <-chan struct{}) {
		tick := time.NewTicker(RateInterval)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-tick.C:
				d.sample(now)
			}
		}
	})

	nc, err := connectRetry(d.node, d.cfg.NodeName+"-status", d.log)
	if err != nil {
		return err
	}
	d.statusResp, err = clusterstatus.Serve(nc, d.cfg.NodeName, func() any { return d.Status() }, d.log)
	return err
}

func (d *Daemon) sample(now time.Time) {
	d.rates.sample(now, d.cfg.NodeName, d.relay.Hops(), d.relay.Latency(), d.node.View().Members)
}

// stopStatus stops answering status requests and stops the sampler.
// Safe to call twice and on a partly started daemon.
func (d *Daemon) stopStatus() {
	if d.statusResp != nil {
		d.statusResp.Close()
	}
	d.sampler.stop()
}

// connectRetry opens a client connection to the node's server (in
// process, or BATON_NATS_URL's), trying a few times: every route change
// reloads the server's configuration, which re-checks authorization and
// drops a client caught in its handshake (see relay.handshake). Once
// connected, nats.go reconnects by itself.
func connectRetry(srv *cluster.Node, name string, log *slog.Logger) (*nats.Conn, error) {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			log.Warn("status connection failed; trying again", "attempt", attempt, "err", err)
			time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
		}
		var nc *nats.Conn
		if nc, err = srv.Connect(name); err == nil {
			return nc, nil
		}
	}
	return nil, err
}
