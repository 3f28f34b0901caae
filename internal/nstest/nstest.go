// Package nstest builds small, isolated networks out of Linux network
// namespaces for end-to-end and chaos tests: namespaces, veth pairs, a
// bridge acting as a switch, commands run inside a namespace, and TCP
// dialled from inside a namespace.
//
// Everything it creates carries a random suffix, lives only inside
// namespaces the test created, and is removed by t.Cleanup, also when the
// test fails. Nothing is ever configured on the root namespace's
// interfaces: veth pairs are created inside a test namespace with their
// peer end placed directly into another test namespace.
//
// It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ip;
// Require skips the test loudly without them, or fails it when CI=true.
package nstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where ip netns keeps its named namespaces.
const netnsDir = "/var/run/netns"

// cmdTimeout bounds every ip/tc invocation.
const cmdTimeout = 10 * time.Second

// Require makes sure this test can build namespaces: it runs as root, ip
// is installed and a namespace can actually be created and removed. If
// not, it skips the test with a message starting "SKIP:"; but when the
// environment variable CI is "true" it fails the test instead, since a
// skipped end-to-end test in CI is a test that did not run.
func Require(t testing.TB) {
	t.Helper()
	if why := unavailable(); why != "" {
		msg := "SKIP: network-namespace test not run: " + why +
			". Run it as root on Linux with iproute2 installed (e.g. sudo go test ./e2e/ -run TestNamespaceCluster -v -count=1)."
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true, so a skip is a failure. " + msg)
		}
		t.Skip(msg)
	}
}

func unavailable() string {
	if runtime.GOOS != "linux" {
		return "needs Linux, this is " + runtime.GOOS
	}
	if os.Geteuid() != 0 {
		return fmt.Sprintf("needs root, running as uid %d", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs the ip command (iproute2), not found in PATH"
	}
	// Root is not always enough (containers without CAP_SYS_ADMIN):
	// try the real thing once.
	probe := "bt-probe-" + Suffix()
	if out, err := run("ip", "netns", "add", probe); err != nil {
		return fmt.Sprintf("cannot create a network namespace (ip netns add: %v: %s)", err, out)
	}
	if out, err := run("ip", "netns", "del", probe); err != nil {
		return fmt.Sprintf("cannot delete probe namespace %s (ip netns del: %v: %s)", probe, err, out)
	}
	return ""
}

// Suffix returns 6 random hex digits, to make names unique per run.
func Suffix() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// run runs a command in the root namespace with a deadline and returns
// its combined output. Only ever used for ip/tc commands that create,
// configure or delete test namespaces and what lives in them.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// NS is a named network namespace created by this package.
type NS struct {
	Name string
}

// NewNS creates the namespace prefix-<random suffix>, brings its loopback
// up and deletes it at cleanup. Names must stay short enough for a file
// name; prefix should be a few letters.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	ns, err := CreateNS(prefix + "-" + Suffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return ns
}

// CreateNS creates the namespace name and brings its loopback up. The
// caller must Delete it.
func CreateNS(name string) (*NS, error) {
	if out, err := run("ip", "netns", "add", name); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	if err := ns.LinkUp("lo"); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// Delete removes the namespace. The kernel destroys its interfaces (a
// veth's peer goes with it, a bridge with its namespace) once no process
// is left in it, so stop the processes started in it first.
func (ns *NS) Delete() error {
	if out, err := run("ip", "netns", "del", ns.Name); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
	}
	return nil
}

// Exists reports whether the namespace is still mounted.
func (ns *NS) Exists() bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns.Name))
	return err == nil
}

// IP runs "ip -n <ns> args...", which acts inside the namespace only.
func (ns *NS) IP(args ...string) (string, error) {
	out, err := run("ip", append([]string{"-n", ns.Name}, args...)...)
	if err != nil {
		return out, fmt.Errorf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Command returns, unstarted, "ip netns exec <ns> name args..." bound to
// ctx. ip execs the program in place, so the Cmd's pid is the program's
// own pid: signal it by that pid.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace with a deadline and returns its
// combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := ns.Command(ctx, name, args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("in %s: %s %s: %v: %s", ns.Name, name, strings.Join(args, " "), err, s)
	}
	return s, nil
}

// LinkUp sets an interface of the namespace up.
func (ns *NS) LinkUp(dev string) error {
	_, err := ns.IP("link", "set", "dev", dev, "up")
	return err
}

// LinkDown sets an interface of the namespace down.
func (ns *NS) LinkDown(dev string) error {
	_, err := ns.IP("link", "set", "dev", dev, "down")
	return err
}

// AddAddr adds an address in CIDR notation to an interface.
func (ns *NS) AddAddr(dev, cidr string) error {
	_, err := ns.IP("addr", "add", cidr, "dev", dev)
	return err
}

// AddBridge creates a bridge in the namespace and sets it up.
//
// Multicast snooping is turned off: with snooping on, the bridge forwards
// a multicast group only to ports where it has seen an IGMP report, and
// hosts send reports mainly in answer to an IGMP querier (normally a
// router). The test network has no querier, so once the few unsolicited
// reports sent at join time are missed or aged out, the bridge would
// silently stop forwarding discovery traffic. Without snooping the bridge
// floods multicast to every port, like a plain switch.
//
// STP stays off (the default) and the forward delay is 0, so ports
// forward as soon as they are up.
func (ns *NS) AddBridge(name string) error {
	if _, err := ns.IP("link", "add", "name", name, "type", "bridge",
		"mcast_snooping", "0", "forward_delay", "0", "stp_state", "0"); err != nil {
		return err
	}
	out, err := ns.IP("-d", "link", "show", "dev", name)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "mcast_snooping 0") {
		return fmt.Errorf("bridge %s in %s: multicast snooping still on: %s", name, ns.Name, out)
	}
	return ns.LinkUp(name)
}

// AddVeth creates a veth pair inside this namespace: dev stays here and
// peerDev is created directly inside peer, so neither end ever exists in
// the root namespace. Interface names are at most 15 characters.
func (ns *NS) AddVeth(dev string, peer *NS, peerDev string) error {
	for _, n := range []string{dev, peerDev} {
		if len(n) > unix.IFNAMSIZ-1 {
			return fmt.Errorf("interface name %q longer than %d characters", n, unix.IFNAMSIZ-1)
		}
	}
	_, err := ns.IP("link", "add", "name", dev, "type", "veth", "peer", "name", peerDev, "netns", peer.Name)
	return err
}

// SetMaster attaches an interface to a bridge of the same namespace.
func (ns *NS) SetMaster(dev, bridge string) error {
	_, err := ns.IP("link", "set", "dev", dev, "master", bridge)
	return err
}

// DeleteLink deletes an interface of the namespace.
func (ns *NS) DeleteLink(dev string) error {
	_, err := ns.IP("link", "del", "dev", dev)
	return err
}

// Nft loads an nftables ruleset into the namespace (nft -f -), for
// injecting faults such as dropped multicast. This kernel has no netem;
// nftables drops packets just as well. Rules go with the namespace.
func (ns *NS) Nft(ruleset string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := ns.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns.Name, err, out)
	}
	return nil
}

// RequireNft makes sure nft is installed, like Require does for ip.
func RequireNft(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		msg := "SKIP: nftables' nft not found; make test installs it when run as root"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true, so a skip is a failure. " + msg)
		}
		t.Skip(msg)
	}
}

// Do runs fn on an OS thread that has entered the namespace. Sockets
// fn creates belong to the namespace and keep working from any thread
// afterwards.
//
// The thread is locked and never unlocked: when the goroutine ends, the
// Go runtime terminates a still-locked thread instead of returning it to
// the pool, so no thread of this process is ever left in the wrong
// namespace. fn must not start goroutines that create sockets (they
// would run on other threads, in the root namespace).
func (ns *NS) Do(fn func() error) error {
	f, err := os.Open(filepath.Join(netnsDir, ns.Name))
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns.Name, err)
	}
	defer f.Close()
	fd := int(f.Fd())

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// literal checks that addr is an IP literal with a port, so that dialling
// it needs no name resolution (the resolver may run on other threads, in
// the root namespace, and could send queries outside the test network).
func literal(addr string) error {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return fmt.Errorf("nstest: %q is not ip:port (host names are refused on purpose): %w", addr, err)
	}
	return nil
}

// DialContext dials TCP from inside the namespace. addr must be an IP
// literal with a port.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := literal(addr); err != nil {
		return nil, err
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("nstest: dial %s: only TCP is supported", network)
	}
	var c net.Conn
	err := ns.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a TCP listener inside the namespace. addr must be an IP
// literal with a port (port 0 picks a free one).
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	if err := literal(addr); err != nil {
		return nil, err
	}
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// HTTPClient returns a client whose connections are dialled inside the
// namespace. It never uses a proxy (a proxy from the environment would
// lead outside the test network). URLs must use IP literals.
func (ns *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         ns.DialContext,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     5 * time.Second,
		},
	}
}

// Star is a switched network: one namespace holding a bridge (the
// switch) and n node namespaces, each joined to the bridge by a veth
// pair, with the addresses <prefix>.1 ... <prefix>.n/24.
type Star struct {
	Switch *NS
	Bridge string
	Nodes  []*StarNode

	subnet netip.Addr // the /24, last byte ignored
	sfx    string     // makes device names unique to this star
}

// StarNode is one node namespace of a Star.
type StarNode struct {
	NS        *NS
	Dev       string     // the node's veth end, inside NS
	SwitchDev string     // the bridge port, inside the switch namespace
	Addr      netip.Addr // the node's address on Dev
}

// NewStar builds a Star of n nodes on a random /24 of the benchmark range
// 198.18.0.0/15 (RFC 2544: reserved for test networks, never routed), so
// parallel runs differ. Everything is removed at cleanup.
func NewStar(t testing.TB, n int) *Star {
	t.Helper()
	if n < 1 || n > 200 {
		t.Fatalf("nstest: star of %d nodes", n)
	}
	var b [1]byte
	rand.Read(b[:])
	return NewStarOn(t, n, netip.AddrFrom4([4]byte{198, 18 + b[0]&1, 1 + b[0]>>1, 0}))
}

// NewStarOn is NewStar on the given /24 (its last byte is ignored).
func NewStarOn(t testing.TB, n int, subnet netip.Addr) *Star {
	t.Helper()
	sfx := Suffix()
	sw := NewNS(t, "bt-sw")
	s := &Star{Switch: sw, Bridge: "btbr" + sfx}
	if err := sw.AddBridge(s.Bridge); err != nil {
		t.Fatal(err)
	}
	s.subnet, s.sfx = subnet, sfx
	for i := 1; i <= n; i++ {
		node, err := s.Attach(NewNS(t, fmt.Sprintf("bt-n%d", i)), i)
		if err != nil {
			t.Fatal(err)
		}
		s.Nodes = append(s.Nodes, node)
	}
	return s
}

// Attach joins ns to the star's switch by a new veth pair, with address
// number host (1-254) of the star's /24, and returns it as a StarNode
// (not added to Nodes). A namespace attached to two stars is a host with
// two interfaces on two networks.
func (s *Star) Attach(ns *NS, host int) (*StarNode, error) {
	base := s.subnet.As4()
	base[3] = byte(host)
	node := &StarNode{
		NS:        ns,
		Dev:       fmt.Sprintf("btn%d%s", host, s.sfx),
		SwitchDev: fmt.Sprintf("bts%d%s", host, s.sfx),
		Addr:      netip.AddrFrom4(base),
	}
	steps := []func() error{
		func() error { return ns.AddVeth(node.Dev, s.Switch, node.SwitchDev) },
		func() error { return s.Switch.SetMaster(node.SwitchDev, s.Bridge) },
		func() error { return s.Switch.LinkUp(node.SwitchDev) },
		func() error { return ns.AddAddr(node.Dev, node.Addr.String()+"/24") },
		func() error { return ns.LinkUp(node.Dev) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return node, nil
}

// Proc is a process started by Start.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd so that it is killed (SIGKILL) if the test process
// dies without cleaning up, and waits for it in the background.
//
// The kernel sends the parent-death signal when the *thread* that forked
// the child ends, not the process. Go threads normally live forever, but
// one that a goroutine locks and then exits with (as Do does, on
// purpose) is ended, and any thread may be picked for that. So cmd is
// started and waited for on a thread locked for the purpose, which
// lives exactly as long as the child.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the result of Wait: nil for exit status 0. Valid after Done.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process, by its pid, if it still runs.
func (p *Proc) Signal(sig os.Signal) error {
	if !p.Running() {
		return os.ErrProcessDone
	}
	return p.Cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit; false on timeout.
func (p *Proc) Wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Stop ends the process if it still runs: SIGTERM, then after grace
// SIGKILL, each followed by a bounded wait. It reports what it had to do.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	p.Signal(syscall.SIGTERM)
	if p.Wait(grace) {
		return nil
	}
	p.Signal(syscall.SIGKILL)
	if p.Wait(5 * time.Second) {
		return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", p.Pid(), grace)
	}
	return fmt.Errorf("pid %d still running after SIGKILL", p.Pid())
}

// Build builds the command package pkg (relative to the module root, like
// "./cmd/batond") into a temporary directory and returns the binary.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("go env GOMOD: not inside the module")
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	return bin
}
