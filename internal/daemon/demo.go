package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/baton-relay/baton/internal/textfmt"
)

// DemoOptions describes a demo run.
type DemoOptions struct {
	Nodes      int
	Duration   time.Duration
	Batons     int    // 0: BATON_BATONS or its default
	PeerChoice string // "": BATON_PEER_CHOICE or its default
	Out        io.Writer
	Log        *slog.Logger // the nodes' logs
	// Quiet, if set, is called once the report is printed, before the
	// nodes stop: stopping a whole cluster at once makes its servers log
	// connection resets that mean nothing here.
	Quiet func()
}

// DemoNode is one node's line in the demo report.
type DemoNode struct {
	Name    string
	Members int
	Routes  int
	Hops    uint64
}

// DemoReport is what a demo measured.
type DemoReport struct {
	Nodes    []DemoNode
	FormedIn time.Duration // from the last node's start until all saw all
	Relaying time.Duration // from the first baton until the end
	Hops     uint64
}

// RunDemo runs a whole cluster in this process: Nodes daemons on
// 127.0.0.1, discovering each other by real multicast on the loopback
// interface, with a random secret and cluster name so that concurrent
// demos do not mix. It prints a progress line every second and a
// per-node report at the end, and fails if the cluster did not form or a
// node relayed nothing.
func RunDemo(ctx context.Context, opts DemoOptions) (*DemoReport, error) {
	base, err := demoBase(opts)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(opts.Out, "baton demo: %d nodes on 127.0.0.1, cluster %s, discovery %s:%d on lo, %d baton(s), peer choice %s\n",
		opts.Nodes, base.ClusterName, base.MulticastAddr, base.MulticastPort, base.Batons, base.PeerChoice)

	nodes, err := startDemoNodes(base, opts)
	defer stopDemoNodes(nodes)
	if err != nil {
		return nil, err
	}
	if opts.Quiet != nil {
		defer opts.Quiet() // runs before stopDemoNodes
	}
	started := time.Now()
	for _, d := range nodes {
		fmt.Fprintf(opts.Out, "  %s  status http://%s/status  nats %s\n", d.cfg.NodeName, d.HTTPAddr(), d.node.Server().ClientURL())
	}
	if len(nodes) > 0 && nodes[0].HTTPAddr() != "" {
		fmt.Fprintf(opts.Out, "  live page: http://%s/ (any node's status address shows it)\n", nodes[0].HTTPAddr())
	}
	creds := ClientCredentials(base)
	fmt.Fprintf(opts.Out, "  nats CLI: --user %s --password %s   (system: --user %s --password %s)\n",
		creds.User, creds.Password, creds.SysUser, creds.SysPassword)

	rep := watchDemo(ctx, nodes, started, opts)
	printDemoReport(opts.Out, rep)
	return rep, rep.check(opts.Nodes)
}

// demoBase is the configuration shared by the demo's nodes: the BATON_*
// environment (so BATON_BATONS=64 make demo works) with the per-machine
// settings replaced.
func demoBase(opts DemoOptions) (Config, error) {
	var c Config
	if err := loadEnv(&c); err != nil {
		return c, err
	}
	if opts.Nodes < 1 {
		return c, fmt.Errorf("demo needs at least 1 node, got %d", opts.Nodes)
	}
	if opts.Batons > 0 {
		c.Batons = opts.Batons
	}
	if opts.PeerChoice != "" {
		c.PeerChoice = opts.PeerChoice
	}

	id := randomHex(4)
	c.ClusterName = "demo-" + id
	c.Secret = randomHex(16)
	c.MulticastIF = "lo"
	c.MulticastTTL = 1
	c.Seeds = nil
	c.Advertise = "127.0.0.1"
	c.HTTPAddr = "127.0.0.1:0"
	c.NATSListen = "127.0.0.1:0"
	c.RouteListen = "127.0.0.1:0"
	c.NATSURL = "" // the demo's nodes embed their servers
	c.MinNodes = opts.Nodes
	c.LeaveGrace = 200 * time.Millisecond

	port, err := freeUDPPort()
	if err != nil {
		return c, err
	}
	c.MulticastPort = port
	return c, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeUDPPort finds a UDP port no one uses now, so two demos (or a demo
// and a test) on one machine do not share a discovery port.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free UDP port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

func startDemoNodes(base Config, opts DemoOptions) ([]*Daemon, error) {
	var nodes []*Daemon
	for i := 1; i <= opts.Nodes; i++ {
		cfg := base
		cfg.NodeName = fmt.Sprintf("node-%d", i)
		d, err := Start(cfg, opts.Log.With("node", cfg.NodeName))
		if err != nil {
			return nodes, fmt.Errorf("start %s: %w", cfg.NodeName, err)
		}
		nodes = append(nodes, d)
	}
	return nodes, nil
}

// stopDemoNodes stops every node cleanly and at the same time.
func stopDemoNodes(nodes []*Daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range nodes {
		wg.Go(func() { d.Shutdown(ctx) })
	}
	wg.Wait()
}

// watchDemo prints progress every second until the duration is over or
// ctx is cancelled, and returns the final figures.
func watchDemo(ctx context.Context, nodes []*Daemon, started time.Time, opts DemoOptions) *DemoReport {
	rep := &DemoReport{}
	tty := isTerminal(opts.Out)
	end := time.NewTimer(opts.Duration)
	defer end.Stop()
	// Formation is checked every 100 ms so "formed in" is precise; the
	// progress line is printed every second.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()

	var firstHop time.Time
	var lastHops uint64
	lastAt := time.Now()
	for ticks := 1; ; ticks++ {
		select {
		case <-ctx.Done():
		case <-end.C:
		case now := <-tick.C:
			hops, members := demoSnapshot(nodes)
			if rep.FormedIn == 0 && allFormed(members, len(nodes)) {
				rep.FormedIn = now.Sub(started)
			}
			if firstHop.IsZero() && hops > 0 {
				firstHop = now
			}
			if ticks%10 != 0 {
				continue
			}
			rate := float64(hops-lastHops) / now.Sub(lastAt).Seconds()
			lastHops, lastAt = hops, now
			line := progressLine(now.Sub(started), members, len(nodes), rep.FormedIn, hops, rate)
			if tty {
				fmt.Fprintf(opts.Out, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(opts.Out, line)
			}
			continue
		}
		break
	}
	if tty {
		fmt.Fprintln(opts.Out)
	}

	for _, d := range nodes {
		rep.Nodes = append(rep.Nodes, DemoNode{
			Name:    d.cfg.NodeName,
			Members: len(d.node.View().Alive),
			Routes:  len(d.node.Routes()),
			Hops:    d.relay.Hops(),
		})
		rep.Hops += d.relay.Hops()
	}
	if !firstHop.IsZero() {
		rep.Relaying = time.Since(firstHop)
	}
	return rep
}

func demoSnapshot(nodes []*Daemon) (hops uint64, members []int) {
	for _, d := range nodes {
		hops += d.relay.Hops()
		members = append(members, len(d.node.View().Alive))
	}
	return hops, members
}

func allFormed(members []int, n int) bool {
	for _, m := range members {
		if m != n {
			return false
		}
	}
	return true
}

func progressLine(elapsed time.Duration, members []int, n int, formed time.Duration, hops uint64, rate float64) string {
	seen := make([]string, len(members))
	for i, m := range members {
		seen[i] = fmt.Sprint(m)
	}
	state := "forming"
	if formed > 0 {
		state = fmt.Sprintf("formed in %.2fs", formed.Seconds())
	}
	return fmt.Sprintf("[%3.0fs] members seen %s of %d (%s)  hops %s  rate %s/s",
		elapsed.Seconds(), strings.Join(seen, "/"), n, state, textfmt.Thousands(hops), textfmt.Thousands(uint64(rate)))
}

func printDemoReport(w io.Writer, rep *DemoReport) {
	fmt.Fprintf(w, "\n%-10s %8s %7s %14s %7s\n", "node", "members", "routes", "hops", "share")
	for _, n := range rep.Nodes {
		share := 0.0
		if rep.Hops > 0 {
			share = 100 * float64(n.Hops) / float64(rep.Hops)
		}
		fmt.Fprintf(w, "%-10s %8d %7d %14s %6.1f%%\n", n.Name, n.Members, n.Routes, textfmt.Thousands(n.Hops), share)
	}
	rate := 0.0
	if rep.Relaying > 0 {
		rate = float64(rep.Hops) / rep.Relaying.Seconds()
	}
	fmt.Fprintf(w, "\ntotal %s hops in %.1fs of relaying: %s hops/s\n",
		textfmt.Thousands(rep.Hops), rep.Relaying.Seconds(), textfmt.Thousands(uint64(rate)))
}

// check fails a demo in which the cluster did not form or some node
// relayed nothing, so `make demo` exits non-zero when baton is broken.
func (r *DemoReport) check(n int) error {
	var errs []error
	if r.FormedIn == 0 {
		errs = append(errs, fmt.Errorf("the cluster never formed: not every node saw all %d members", n))
	}
	for _, node := range r.Nodes {
		if node.Hops == 0 {
			errs = append(errs, fmt.Errorf("%s relayed no baton", node.Name))
		}
	}
	return errors.Join(errs...)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
