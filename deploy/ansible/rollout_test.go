package ansible_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/nstest"
)

// host is one fake Pi: a network namespace with its own sshd on its own
// address, and its own install prefix on the shared file system.
type host struct {
	name   string
	node   *nstest.StarNode
	prefix string
}

func (h *host) path(p ...string) string {
	return filepath.Join(append([]string{h.prefix}, p...)...)
}

// pid returns the pid the supervisor recorded, or 0.
func (h *host) pid() int {
	b, err := os.ReadFile(h.path("run", "batond", "batond.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// release returns what current points at (e.g. releases/v1), or "".
func (h *host) release() string {
	l, _ := os.Readlink(h.path("opt", "batond", "current"))
	return l
}

// statusDoc is the part of batond's /status the test reads.
type statusDoc struct {
	Node      string   `json:"node"`
	Members   []string `json:"members"`
	Hops      uint64   `json:"hops"`
	Version   string   `json:"version"`
	Interface string   `json:"interface"`
}

// status fetches /status from inside the cluster's network (the switch
// namespace), at the host's own address.
func (r *rollout) status(h *host) (statusDoc, error) {
	var st statusDoc
	c := r.star.Switch.HTTPClient(3 * time.Second)
	resp, err := c.Get("http://" + h.node.Addr.String() + ":8380/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("%s: /status: %s", h.name, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// rollout is the test's world: the network, the hosts, the controller's
// files.
type rollout struct {
	t         *testing.T
	star      *nstest.Star
	hosts     []*host
	scratch   string
	inventory string
	env       []string
	dir       string
	timings   []string
}

// TestRolloutOverSSH rolls batond out with the playbook, over real SSH,
// into three network-namespace hosts behind one switch, each running its
// own sshd and nftables with a drop policy, each with its own install
// prefix. It checks, in order:
//
//  1. a --check --diff run succeeds, reports changes and changes nothing
//     on the hosts (no run, --diff included, may print the secret);
//  2. a real run installs v1 everywhere; the daemons, started by the role
//     (supervise mode) inside their namespaces with BATON_MULTICAST_IF set
//     to the namespace's veth, form one cluster of three and relay;
//  3. a second run changes nothing (changed=0) and restarts nothing;
//  4. a rollout of a broken build (it serves /status but lists only
//     itself) fails on the first host, which is rolled back to v1 and
//     rejoins, and stops there: the other hosts are never touched.
func TestRolloutOverSSH(t *testing.T) {
	nstest.Require(t)
	nstest.RequireNft(t)
	requireTools(t, "ansible-playbook", "ansible-vault", "ssh", "ssh-keygen", "/usr/sbin/sshd", "setpriv", "go")
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		t.Fatalf("the test builds for this machine; no dist name for GOARCH=%s", runtime.GOARCH)
	}
	testStart := time.Now()

	r := &rollout{t: t, dir: here(t)}
	r.setUp(arch)

	// 1. Check mode.
	out := r.play("check run", "--check", "--diff")
	rc := recap(out)
	for _, h := range r.hosts {
		c, ok := rc[h.name]
		if !ok || c["failed"] != 0 || c["unreachable"] != 0 || c["changed"] == 0 {
			t.Fatalf("check run, %s: recap %v, want no failure and some changes:\n%s", h.name, c, out)
		}
		if h.release() != "" || h.pid() != 0 {
			t.Fatalf("check run changed %s: current=%q pid=%d", h.name, h.release(), h.pid())
		}
		if _, err := os.Stat(h.path("etc", "baton", "baton.env")); err == nil {
			t.Fatalf("check run wrote %s's environment file", h.name)
		}
	}

	// 2. The real rollout.
	out = r.play("first rollout")
	rc = recap(out)
	for _, h := range r.hosts {
		if c := rc[h.name]; c["failed"] != 0 || c["unreachable"] != 0 || c["changed"] == 0 {
			t.Fatalf("first rollout, %s: recap %v:\n%s", h.name, c, out)
		}
	}
	r.checkInstalled("releases/v1")
	formed := time.Now()
	r.waitCluster("v1")
	r.timings = append(r.timings, fmt.Sprintf("cluster of 3 listed by every node %.1fs after the rollout ended", time.Since(formed).Seconds()))
	r.waitRelaying()
	pids := map[string]int{}
	for _, h := range r.hosts {
		pids[h.name] = h.pid()
	}

	// 3. Nothing to do.
	out = r.play("second rollout (no change)")
	rc = recap(out)
	for _, h := range r.hosts {
		if c := rc[h.name]; c["failed"] != 0 || c["changed"] != 0 || c["ok"] == 0 {
			t.Errorf("second rollout, %s: recap %v, want changed=0:\n%s", h.name, c, out)
		}
		if h.pid() != pids[h.name] {
			t.Errorf("second rollout restarted %s (pid %d -> %d)", h.name, pids[h.name], h.pid())
		}
	}

	// 4. A broken build.
	out = r.playExpectFail("broken rollout", "-e", "batond_version=v2-broken")
	rc = recap(out)
	first := r.hosts[0]
	if c := rc[first.name]; c["failed"] != 1 || c["rescued"] != 1 {
		t.Errorf("broken rollout, %s: recap %v, want failed=1 rescued=1 (rolled back, then stopped):\n%s", first.name, c, out)
	}
	// The YAML callback folds long messages: compare without line breaks.
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "rolled back to releases/v1, which serves /status again") {
		t.Errorf("broken rollout: no report of the rollback to v1 in the output:\n%s", out)
	}
	if first.release() != "releases/v1" {
		t.Errorf("after the broken rollout %s's current is %q, want releases/v1", first.name, first.release())
	}
	if first.pid() == pids[first.name] {
		t.Errorf("%s was not restarted by the broken rollout (pid %d): the test did not test a rollback", first.name, first.pid())
	}
	for _, h := range r.hosts[1:] {
		if c, ok := rc[h.name]; ok && (c["ok"] != 0 || c["changed"] != 0) {
			t.Errorf("broken rollout reached %s after %s failed: recap %v", h.name, first.name, c)
		}
		if _, err := os.Stat(h.path("opt", "batond", "releases", "v2-broken")); err == nil {
			t.Errorf("broken rollout installed v2-broken on %s", h.name)
		}
		if h.pid() != pids[h.name] || h.release() != "releases/v1" {
			t.Errorf("broken rollout touched %s: pid %d -> %d, current %q", h.name, pids[h.name], h.pid(), h.release())
		}
	}
	r.waitCluster("v1")
	r.waitRelaying()

	r.timings = append(r.timings, fmt.Sprintf("whole test (builds, hosts, 4 playbook runs, checks) %.1fs", time.Since(testStart).Seconds()))
	r.report()
}

// setUp builds the binaries, the network, the sshds, the vault and the
// inventory. Everything lives in a scratch directory and in namespaces,
// and is removed at cleanup.
func (r *rollout) setUp(arch string) {
	t := r.t
	// Not t.TempDir(): the daemon runs as nobody and must be able to
	// reach its binary, so the path must be traversable (TempDir's are
	// 0700).
	scratch, err := os.MkdirTemp("", "baton-ansible-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(scratch) })
	if err := os.Chmod(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	r.scratch = scratch
	r.env = append(toolEnv(t, scratch),
		// Replaces Ansible's default ssh_args: one connection per host
		// reused by every task (a new SSH handshake per task made a run
		// minutes long on a loaded machine), with its control socket in
		// scratch so cleanup can end it; this test's known_hosts only;
		// no user or system ssh_config.
		"ANSIBLE_SSH_ARGS=-F none -o ControlMaster=auto -o ControlPersist=60s -o ControlPath="+filepath.Join(scratch, "cp", "%C")+
			" -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="+filepath.Join(scratch, "ssh", "known_hosts"),
		"ANSIBLE_VAULT_PASSWORD_FILE="+filepath.Join(scratch, "vault-pass"),
		// A task that hangs fails with its name instead of stalling the
		// run until toolTimeout.
		"ANSIBLE_TASK_TIMEOUT=120",
		"ANSIBLE_TIMEOUT=30",
	)

	start := time.Now()
	dist := filepath.Join(scratch, "dist")
	bin := filepath.Join(scratch, "build")
	goBuild(t, filepath.Join(bin, "batond-v1"), "./cmd/batond", "v1")
	goBuild(t, filepath.Join(bin, "notjoining"), "./deploy/ansible/testdata/notjoining", "v2-broken")
	writeDist(t, dist, "v1", arch, filepath.Join(bin, "batond-v1"))
	writeDist(t, dist, "v2-broken", arch, filepath.Join(bin, "notjoining"))
	r.timings = append(r.timings, fmt.Sprintf("builds %.1fs", time.Since(start).Seconds()))

	start = time.Now()
	r.star = nstest.NewStar(t, 3)
	// The controller (ansible-playbook) runs in the switch namespace, on
	// an address of the bridge.
	ctl := r.star.Nodes[0].Addr.As4()
	ctl[3] = 254
	if err := r.star.Switch.AddAddr(r.star.Bridge, netip.AddrFrom4(ctl).String()+"/24"); err != nil {
		t.Fatal(err)
	}
	for i, n := range r.star.Nodes {
		h := &host{name: fmt.Sprintf("n%d", i+1), node: n, prefix: filepath.Join(scratch, "hosts", fmt.Sprintf("n%d", i+1))}
		if err := os.MkdirAll(h.prefix, 0o755); err != nil {
			t.Fatal(err)
		}
		r.hosts = append(r.hosts, h)
	}
	// Registered after NewStar, so it runs before the namespaces go.
	t.Cleanup(r.stopDaemons)
	r.startSSH()
	r.firewall()
	r.writeInventory()
	r.timings = append(r.timings, fmt.Sprintf("3 hosts with sshd %.1fs", time.Since(start).Seconds()))
}

// startSSH gives every host an sshd on its own address, with a host key,
// config and authorized key of the test's own.
func (r *rollout) startSSH() {
	t := r.t
	sshDir := filepath.Join(r.scratch, "ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keygen := func(path string) string {
		if out, rc := runTool(t, sshDir, r.env, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "baton-ansible-test", "-f", path); rc != 0 {
			t.Fatalf("ssh-keygen: %s", out)
		}
		pub, err := os.ReadFile(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(pub))
	}
	client := keygen(filepath.Join(sshDir, "id_ed25519"))
	if err := os.WriteFile(filepath.Join(sshDir, "authorized_keys"), []byte(client+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// sshd insists on its privilege separation directory, which only
	// its service normally creates.
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}

	var known strings.Builder
	for _, h := range r.hosts {
		dir := filepath.Join(sshDir, h.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		hostKey := keygen(filepath.Join(dir, "host_ed25519"))
		fmt.Fprintf(&known, "%s %s\n", h.node.Addr, hostKey)
		cfg := fmt.Sprintf(`ListenAddress %s:22
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel ERROR
`, h.node.Addr, filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "sshd.pid"), filepath.Join(sshDir, "authorized_keys"))
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		log, err := os.Create(filepath.Join(dir, "sshd.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := h.node.NS.Command(context.Background(), "/usr/sbin/sshd", "-D", "-e", "-f", cfgPath)
		cmd.Stdout, cmd.Stderr = log, log
		p, err := nstest.Start(cmd)
		if err != nil {
			t.Fatalf("sshd in %s: %v", h.name, err)
		}
		t.Cleanup(func() {
			if err := p.Stop(5 * time.Second); err != nil {
				t.Errorf("sshd of %s: %v", h.name, err)
			}
			log.Close()
		})
	}
	if err := os.WriteFile(filepath.Join(sshDir, "known_hosts"), []byte(known.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(r.scratch, "cp")
	if err := os.MkdirAll(cp, 0o700); err != nil {
		t.Fatal(err)
	}
	// Registered after the sshds, so it runs before they stop: ends the
	// SSH control masters Ansible left behind (ControlPersist).
	t.Cleanup(func() {
		socks, _ := filepath.Glob(filepath.Join(cp, "*"))
		for _, sock := range socks {
			runTool(t, r.scratch, r.env, "ssh", "-F", "none", "-o", "ControlPath="+sock, "-O", "exit", "controller")
		}
	})
	// Wait (bounded) until every sshd accepts connections from the
	// controller's namespace.
	for _, h := range r.hosts {
		addr := h.node.Addr.String() + ":22"
		var err error
		for range 100 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c, derr := r.star.Switch.DialContext(ctx, "tcp", addr)
			cancel()
			if err = derr; err == nil {
				c.Close()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("sshd of %s never accepted on %s: %v", h.name, addr, err)
		}
	}
}

// firewall gives every host a default-deny input policy that lets only
// SSH and replies in: the cluster can only form if the role opens its
// ports (batond_nftables).
func (r *rollout) firewall() {
	for _, h := range r.hosts {
		if err := h.node.NS.Nft(`table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		tcp dport 22 accept
	}
}
`); err != nil {
			r.t.Fatal(err)
		}
	}
}

// secret is the cluster secret the test put into its vault.
func (r *rollout) secret() string {
	b, err := os.ReadFile(filepath.Join(r.scratch, "secret"))
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// writeInventory writes the test's inventory: the group pis with one
// entry per host, the secret encrypted with a vault password of the
// test's own.
func (r *rollout) writeInventory() {
	t := r.t
	if err := os.WriteFile(filepath.Join(r.scratch, "vault-pass"), []byte(randomHex(16)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := randomHex(16)
	if err := os.WriteFile(filepath.Join(r.scratch, "secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc, rc := runTool(t, r.scratch, r.env, "ansible-vault", "encrypt_string", "--name", "batond_secret", secret)
	if rc != 0 || !strings.Contains(enc, "$ANSIBLE_VAULT") {
		t.Fatalf("ansible-vault encrypt_string: %s", enc)
	}
	if strings.Contains(enc, secret) {
		t.Fatal("ansible-vault printed the secret in clear")
	}

	var inv strings.Builder
	fmt.Fprintf(&inv, `---
all:
  children:
    pis:
      vars:
        ansible_user: root
        ansible_become: false
        ansible_python_interpreter: /usr/bin/python3
        ansible_ssh_private_key_file: %s
        ansible_remote_tmp: %s
        batond_version: v1
        batond_dist_dir: %s
        batond_service_manager: supervise
        batond_create_user: false
        batond_user: nobody
        batond_group: nogroup
        batond_min_nodes: 3
        batond_health_retries: 10
        batond_nftables: true
        batond_wifi_powersave_off: true
`, filepath.Join(r.scratch, "ssh", "id_ed25519"), filepath.Join(r.scratch, "remote-tmp"), filepath.Join(r.scratch, "dist"))
	for _, line := range strings.Split(strings.TrimSpace(enc), "\n") {
		fmt.Fprintf(&inv, "        %s\n", line)
	}
	inv.WriteString("      hosts:\n")
	for _, h := range r.hosts {
		fmt.Fprintf(&inv, "        %s:\n          ansible_host: %s\n          batond_prefix: %s\n          batond_multicast_if: %s\n",
			h.name, h.node.Addr, h.prefix, h.node.Dev)
	}
	r.inventory = filepath.Join(r.scratch, "inventory.yml")
	if err := os.WriteFile(r.inventory, []byte(inv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runPlay runs the playbook from the controller's namespace and returns
// its output and exit code. The output is also kept in the scratch dir.
func (r *rollout) runPlay(what string, args ...string) (string, int) {
	t := r.t
	start := time.Now()
	argv := append([]string{"netns", "exec", r.star.Switch.Name, "ansible-playbook", "-i", r.inventory, "site.yml"}, args...)
	env := r.env
	if v := os.Getenv("BATON_ANSIBLE_VERBOSE"); v != "" {
		// For debugging the test: Ansible's -v level, and a log that
		// outlives the scratch directory.
		env = append(slices.Clip(env), "ANSIBLE_VERBOSITY="+v, "ANSIBLE_LOG_PATH="+filepath.Join(os.TempDir(), "baton-ansible-debug.log"))
	}
	out, rc := runTool(t, r.dir, env, "ip", argv...)
	d := time.Since(start)
	r.timings = append(r.timings, fmt.Sprintf("%s %.1fs (exit %d)", what, d.Seconds(), rc))
	t.Logf("%s: exit %d in %v", what, rc, d.Round(time.Millisecond))
	name := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(what) + ".log"
	os.WriteFile(filepath.Join(r.scratch, name), []byte(out), 0o600)
	if strings.Contains(out, r.secret()) {
		t.Errorf("%s: the output shows the cluster secret", what)
	}
	return out, rc
}

func (r *rollout) play(what string, args ...string) string {
	out, rc := r.runPlay(what, args...)
	if rc != 0 {
		r.t.Fatalf("%s: ansible-playbook exited %d:\n%s%s", what, rc, out, r.daemonLogs())
	}
	return out
}

func (r *rollout) playExpectFail(what string, args ...string) string {
	out, rc := r.runPlay(what, args...)
	if rc == 0 {
		r.t.Fatalf("%s: ansible-playbook succeeded, want a failure:\n%s", what, out)
	}
	return out
}

// daemonLogs returns the end of every host's daemon log, for failures.
func (r *rollout) daemonLogs() string {
	var b strings.Builder
	for _, h := range r.hosts {
		data, _ := os.ReadFile(h.path("run", "batond", "batond.log"))
		s := string(data)
		if len(s) > 3000 {
			s = s[len(s)-3000:]
		}
		fmt.Fprintf(&b, "\n--- %s batond.log ---\n%s", h.name, s)
	}
	return b.String()
}

// checkInstalled checks what the role left on every host: the release
// behind the symlink, the 0600 environment file with the vaulted secret
// and the other hosts as seeds, the daemon running as nobody with
// BATON_MULTICAST_IF set to the namespace's veth, the firewall chain,
// and the Wi-Fi drop-in.
func (r *rollout) checkInstalled(release string) {
	t := r.t
	for _, h := range r.hosts {
		if got := h.release(); got != release {
			t.Errorf("%s: current -> %q, want %q", h.name, got, release)
		}
		envFile := h.path("etc", "baton", "baton.env")
		fi, err := os.Stat(envFile)
		if err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: environment file mode %v, want 0600", h.name, fi.Mode().Perm())
		}
		env, _ := os.ReadFile(envFile)
		if !strings.Contains(string(env), "BATON_SECRET='"+r.secret()+"'") {
			t.Errorf("%s: environment file lacks the vaulted secret", h.name)
		}

		pid := h.pid()
		if pid == 0 {
			t.Fatalf("%s: no daemon pid after the rollout%s", h.name, r.daemonLogs())
		}
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("%s: daemon pid %d: %v%s", h.name, pid, err, r.daemonLogs())
		}
		vars := map[string]string{}
		for _, kv := range strings.Split(string(environ), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			vars[k] = v
		}
		if vars["BATON_MULTICAST_IF"] != h.node.Dev {
			t.Errorf("%s: daemon has BATON_MULTICAST_IF=%q, want the namespace's veth %q", h.name, vars["BATON_MULTICAST_IF"], h.node.Dev)
		}
		var wantSeeds []string
		for _, o := range r.hosts {
			if o != h {
				wantSeeds = append(wantSeeds, o.node.Addr.String()+":45892")
			}
		}
		if vars["BATON_SEEDS"] != strings.Join(wantSeeds, ",") {
			t.Errorf("%s: BATON_SEEDS=%q, want %q", h.name, vars["BATON_SEEDS"], strings.Join(wantSeeds, ","))
		}
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d", pid), &st); err != nil || st.Uid != 65534 {
			t.Errorf("%s: daemon pid %d runs as uid %d (err %v), want nobody (65534)", h.name, pid, st.Uid, err)
		}
		if out, err := h.node.NS.Run("nft", "list", "chain", "inet", "filter", "input"); err != nil || !strings.Contains(out, "jump batond") {
			t.Errorf("%s: input chain does not jump to batond's chain: %v\n%s", h.name, err, out)
		}
		if _, err := os.Stat(h.path("etc", "NetworkManager", "conf.d", "90-batond-wifi-powersave.conf")); err != nil {
			t.Errorf("%s: Wi-Fi power save drop-in: %v", h.name, err)
		}
	}
}

// waitCluster polls (bounded) until every node lists all three members
// and runs the wanted version.
func (r *rollout) waitCluster(version string) {
	t := r.t
	want := []string{"n1", "n2", "n3"}
	var last []string
	for range 100 {
		last = last[:0]
		ok := true
		for _, h := range r.hosts {
			st, err := r.status(h)
			if err != nil || !slices.Equal(st.Members, want) || st.Version != version || st.Interface != h.node.Dev {
				ok = false
			}
			last = append(last, fmt.Sprintf("%s: %+v (err %v)", h.name, st, err))
		}
		if ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the cluster did not form with %s on every node:\n%s%s", version, strings.Join(last, "\n"), r.daemonLogs())
}

// waitRelaying polls (bounded) until every node's hop count has grown:
// the batons go round.
func (r *rollout) waitRelaying() {
	t := r.t
	first := map[string]uint64{}
	for _, h := range r.hosts {
		st, err := r.status(h)
		if err != nil {
			t.Fatal(err)
		}
		first[h.name] = st.Hops
	}
	for range 100 {
		moved := 0
		for _, h := range r.hosts {
			if st, err := r.status(h); err == nil && st.Hops > first[h.name] {
				moved++
			}
		}
		if moved == len(r.hosts) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("not every node relayed batons within 20s%s", r.daemonLogs())
}

// stopDaemons stops the daemons the role started, through the role's own
// supervisor, then by pid if one is left (checked to be a batond of this
// test's prefixes first).
func (r *rollout) stopDaemons() {
	for _, h := range r.hosts {
		sup := h.path("opt", "batond", "supervise")
		if _, err := os.Stat(sup); err == nil {
			if out, err := h.node.NS.Run(sup, "stop"); err != nil {
				r.t.Errorf("stopping %s's daemon: %v: %s", h.name, err, out)
			}
		}
		pid := h.pid()
		if pid == 0 {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if strings.HasPrefix(exe, h.prefix+"/") {
			syscall.Kill(pid, syscall.SIGKILL)
			r.t.Errorf("%s's daemon (pid %d) was still running after its supervisor's stop; killed", h.name, pid)
		}
	}
}

// report prints the timings (make test runs this package with -v).
func (r *rollout) report() {
	fmt.Print("deploy/ansible rollout test (3 namespace hosts over SSH):\n  " + strings.Join(r.timings, "\n  ") + "\n")
}
