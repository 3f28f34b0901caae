// Package ansible_test tests the Ansible role in this directory: the
// linters, the rendered systemd unit, and a real rollout over SSH into
// network-namespace "hosts" (see README.md, "How the tests run the
// role").
//
// The tools come from Debian (scripts/install-deps.sh installs them as
// root). Without them, or without root for the namespaces, the tests say
// SKIP, and fail instead when CI=true.
package ansible_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// toolTimeout bounds every linter and Ansible run; the machine is shared
// and slow, so it is generous.
const toolTimeout = 5 * time.Minute

// requireTools skips the test loudly when a tool is missing, or fails it
// under CI=true, where a skipped test is a test that did not run.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("SKIP: %s not found; `make test` installs them from Debian when run as root (scripts/install-deps.sh)",
		strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true, so a skip is a failure. " + msg)
	}
	t.Skip(msg)
}

// here is this directory (deploy/ansible), where go test runs.
func here(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "site.yml")); err != nil {
		t.Fatalf("not in deploy/ansible: %v", err)
	}
	return d
}

// toolEnv is the environment for Ansible and its linters: every place
// they write (home, caches, temp files) inside scratch, no proxy, no
// colour, and this directory's ansible.cfg.
func toolEnv(t *testing.T, scratch string) []string {
	t.Helper()
	home := filepath.Join(scratch, "home")
	for _, d := range []string{home, filepath.Join(scratch, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"TMPDIR=" + filepath.Join(scratch, "tmp"),
		"ANSIBLE_HOME=" + filepath.Join(home, ".ansible"),
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(scratch, "tmp"),
		"ANSIBLE_CONFIG=" + filepath.Join(here(t), "ansible.cfg"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
		"NO_COLOR=1",
		"LANG=C.UTF-8",
	}
	return env
}

// runTool runs a command in dir with env, bounded by toolTimeout, and
// returns its combined output and exit code (-1 if it did not run).
func runTool(t *testing.T, dir string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	// Within the test's own deadline, with a minute to spare, so that
	// a stuck tool fails the test and cleanup still runs.
	limit := toolTimeout
	if d, ok := t.Deadline(); ok && time.Until(d)-time.Minute < limit {
		limit = max(time.Until(d)-time.Minute, 10*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no result within %v:\n%s", name, strings.Join(args, " "), limit, out.String())
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		}
		t.Fatalf("%s: %v", name, err)
	}
	return out.String(), 0
}

// TestLint: the YAML passes yamllint in strict mode (warnings fail too),
// ansible-lint passes with the production profile, the playbook passes
// Ansible's syntax check against the example inventory, and the example
// inventory's vaulted secret decrypts with the password the README names.
func TestLint(t *testing.T) {
	requireTools(t, "yamllint", "ansible-lint", "ansible-playbook", "ansible")
	dir := here(t)
	scratch := t.TempDir()
	env := toolEnv(t, scratch)

	if out, rc := runTool(t, dir, env, "yamllint", "--strict", "."); rc != 0 {
		t.Errorf("yamllint --strict . exited %d:\n%s", rc, out)
	}

	out, rc := runTool(t, dir, env, "ansible-lint", "--offline", "--profile", "production", "--nocolor")
	if rc != 0 || !strings.Contains(out, "Passed with production profile") {
		t.Errorf("ansible-lint (production profile) exited %d:\n%s", rc, out)
	}

	if out, rc := runTool(t, dir, env, "ansible-playbook", "-i", "inventory.example.yml", "--syntax-check", "site.yml"); rc != 0 {
		t.Errorf("ansible-playbook --syntax-check exited %d:\n%s", rc, out)
	}

	pass := filepath.Join(scratch, "example-vault-pass")
	if err := os.WriteFile(pass, []byte("baton-example-vault-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, rc = runTool(t, dir, env, "ansible", "-i", "inventory.example.yml", "--vault-password-file", pass,
		"-c", "local", "pi-01", "-m", "ansible.builtin.debug", "-a", "var=batond_secret")
	if rc != 0 || !strings.Contains(out, "example-secret-replace-me") {
		t.Errorf("the example inventory's vaulted batond_secret did not decrypt (exit %d):\n%s", rc, out)
	}
}

// renderUnit renders the role's unit template with Ansible itself (the
// role's defaults and vars), into prefix, as the role would on a host.
func renderUnit(t *testing.T, scratch, prefix string, extra map[string]string) string {
	t.Helper()
	dir := here(t)
	role := filepath.Join(dir, "roles", "batond")
	unit := filepath.Join(scratch, "batond.service")
	// Extra vars: vars_files outrank a play's vars, and the role's
	// defaults come in as vars_files here.
	vars := map[string]string{"batond_prefix": prefix, "batond_version": "v-test"}
	for k, v := range extra {
		vars[k] = v
	}
	varsJSON, err := json.Marshal(vars)
	if err != nil {
		t.Fatal(err)
	}
	play := fmt.Sprintf(`---
- name: Render the batond unit
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - %s
    - %s
  tasks:
    - name: Render
      ansible.builtin.template:
        src: %s
        dest: %s
        mode: "0644"
`, filepath.Join(role, "defaults", "main.yml"), filepath.Join(role, "vars", "main.yml"),
		filepath.Join(role, "templates", "batond.service.j2"), unit)
	pb := filepath.Join(scratch, "render.yml")
	if err := os.WriteFile(pb, []byte(play), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, rc := runTool(t, scratch, toolEnv(t, scratch), "ansible-playbook", "-i", "localhost,", "-e", string(varsJSON), pb); rc != 0 {
		t.Fatalf("rendering the unit failed (exit %d):\n%s", rc, out)
	}
	return unit
}

// TestUnitVerifies: the rendered unit passes systemd-analyze verify with
// no warning at all (verify exits 0 on unknown keys and bad values and
// only warns, so any output fails the test), keeps AF_NETLINK in
// RestrictAddressFamilies, runs the current release as the service user,
// and stays at an exposure level systemd rates as "OK" or better.
func TestUnitVerifies(t *testing.T) {
	requireTools(t, "ansible-playbook", "systemd-analyze")
	scratch := t.TempDir()
	prefix := filepath.Join(scratch, "host")
	// verify checks that ExecStart's program exists; the role's path
	// under the scratch prefix must hold one.
	bin := filepath.Join(prefix, "opt", "batond", "releases", "v-test", "batond")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/v-test", filepath.Join(prefix, "opt", "batond", "current")); err != nil {
		t.Fatal(err)
	}
	// The role's default account (batond), which need not exist here:
	// verify judges the unit, not this machine's user list.
	unit := renderUnit(t, scratch, prefix, nil)
	text, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}

	env := toolEnv(t, scratch)
	out, rc := runTool(t, scratch, env, "systemd-analyze", "verify", unit)
	if rc != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s: exit %d, output:\n%s\nunit:\n%s", unit, rc, out, text)
	}

	families := regexp.MustCompile(`(?m)^RestrictAddressFamilies=(.*)$`).FindStringSubmatch(string(text))
	if families == nil || !strings.Contains(families[1], "AF_NETLINK") {
		t.Errorf("the unit must allow AF_NETLINK (Go lists interfaces over netlink); RestrictAddressFamilies: %q", families)
	}
	for _, want := range []string{
		"ExecStart=" + filepath.Join(prefix, "opt", "batond", "current", "batond"),
		"EnvironmentFile=" + filepath.Join(prefix, "etc", "baton", "baton.env"),
		"User=batond",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"CapabilityBoundingSet=\n",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("the unit lacks %q:\n%s", want, text)
		}
	}

	// systemd rates 0-100 (shown as 0.0-10.0); 39 is the upper end of
	// what it calls "OK". Offline: judged from the file alone.
	out, rc = runTool(t, scratch, env, "systemd-analyze", "security", "--offline=yes", "--threshold=39", unit)
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
	if rc != 0 || score == nil {
		t.Errorf("systemd-analyze security --offline=yes --threshold=39: exit %d:\n%s", rc, out)
	} else {
		t.Logf("systemd-analyze security: exposure %s", score[1])
	}
}

// writeDist lays out a build as make dist does and the role expects:
// <dist>/<version>/batond-linux-<arch> and <dist>/<version>/SHA256SUMS.
func writeDist(t *testing.T, dist, version, arch, bin string) {
	t.Helper()
	dir := filepath.Join(dist, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	name := "batond-linux-" + arch
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	sums := hex.EncodeToString(sum[:]) + "  " + name + "\n"
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
}

// goBuild builds a static binary (CGO_ENABLED=0) from the module root,
// stamping version into batond's version variable.
func goBuild(t *testing.T, out, pkg, version string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join(here(t), "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-X github.com/baton-relay/baton/internal/daemon.Version="+version,
		"-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	t.Logf("built %s (%s) in %v", pkg, version, time.Since(start).Round(time.Millisecond))
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// recapLine matches one host's line of Ansible's PLAY RECAP.
var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$`)

// recap parses the PLAY RECAP: host -> counter -> value.
func recap(out string) map[string]map[string]int {
	res := map[string]map[string]int{}
	i := strings.LastIndex(out, "PLAY RECAP")
	if i < 0 {
		return res
	}
	for _, m := range recapLine.FindAllStringSubmatch(out[i:], -1) {
		counts := map[string]int{}
		for _, f := range strings.Fields(m[2]) {
			k, v, _ := strings.Cut(f, "=")
			counts[k], _ = strconv.Atoi(v)
		}
		res[m[1]] = counts
	}
	return res
}
