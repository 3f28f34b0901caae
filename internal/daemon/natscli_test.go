package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-relay/baton/relay"
)

// natsCLIVersion is the nats CLI the tests run, installed into the
// repository's bin/ by `make test` (the natscli target).
const natsCLIVersion = "v0.5.0"

// requireNATSCLI returns the path of the real nats CLI: bin/nats of this
// repository, else nats on PATH. Without it the test skips loudly, and
// fails when CI=true, since a skipped test in CI is a test that did not
// run.
func requireNATSCLI(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "..", "bin", "nats"))
	if err == nil {
		if _, err = os.Stat(path); err != nil {
			path, err = exec.LookPath("nats")
		}
	}
	if err != nil {
		msg := "SKIP: the nats CLI was not found in bin/ or on PATH, so the nats CLI test did not run. " +
			"`make test` installs it (make natscli: go install github.com/nats-io/natscli/nats@" + natsCLIVersion + ")."
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true, so a skip is a failure. " + msg)
		}
		t.Skip(msg)
	}
	return path
}

// natsCLI runs the nats CLI with its contexts kept in dir.
type natsCLI struct {
	t    *testing.T
	path string
	dir  string
}

func (c natsCLI) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.path, args...)
	cmd.Env = append(os.Environ(), "HOME="+c.dir, "XDG_CONFIG_HOME="+c.dir, "NO_COLOR=1")
	return cmd
}

// run runs one command to its end, within a minute, and returns its
// standard output; it fails the test on a non-zero exit.
func (c natsCLI) run(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := c.cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("nats %s: %v\nstdout:\n%s\nstderr:\n%s", shortArgs(args), err, stdout.String(), stderr.String())
	}
	shown := stdout.String()
	if len(shown) > 4000 {
		shown = shown[:4000] + "\n[...]"
	}
	c.t.Logf("nats %s:\n%s", shortArgs(args), shown)
	return stdout.String()
}

// The real nats CLI against a 3-node cluster, with the two contexts the
// README shows: `nats sub 'baton.>'` shows batons (a Baton header and a
// decimal counter) and heartbeats (JSON), and with the sys user `nats
// server list`, `server ping` and `server report connections` see all
// three servers.
func TestNATSCLI(t *testing.T) {
	cli := natsCLI{t: t, path: requireNATSCLI(t), dir: t.TempDir()}
	ds := startDaemons(t, 3, nil)
	waitRelaying(t, ds)

	creds := ClientCredentials(ds[0].cfg)
	url := ds[0].Node().Server().ClientURL()
	cli.run("context", "add", "baton", "--server", url, "--user", creds.User, "--password", creds.Password, "--select")
	cli.run("context", "add", "baton-sys", "--server", url, "--user", creds.SysUser, "--password", creds.SysPassword)

	t.Run("sub", func(t *testing.T) { checkSub(t, cli) })
	t.Run("pub", func(t *testing.T) { checkHostilePub(t, natsCLI{t: t, path: cli.path, dir: cli.dir}, ds) })

	var list []struct {
		Server struct {
			Name    string `json:"name"`
			Cluster string `json:"cluster"`
		} `json:"server"`
	}
	if err := json.Unmarshal([]byte(cli.run("--context", "baton-sys", "server", "list", "3", "--json")), &list); err != nil {
		t.Fatalf("nats server list --json: %v", err)
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Server.Name)
		if s.Server.Cluster != "dtest" {
			t.Errorf("server %s is in cluster %q, want dtest", s.Server.Name, s.Server.Cluster)
		}
	}
	if slices.Sort(names); !slices.Equal(names, []string{"n1", "n2", "n3"}) {
		t.Errorf("nats server list found %v, want n1 n2 n3", names)
	}

	ping := cli.run("--context", "baton-sys", "server", "ping", "3")
	for _, n := range []string{"n1", "n2", "n3"} {
		if !regexp.MustCompile(`(?m)^` + n + ` .*rtt=`).MatchString(ping) {
			t.Errorf("nats server ping: no rtt line for %s", n)
		}
	}

	report := cli.run("--context", "baton-sys", "server", "report", "connections")
	for _, want := range []string{"n1-relay", "n2-relay", "n3-relay", "n1-status", "Connections per server"} {
		if !strings.Contains(report, want) {
			t.Errorf("nats server report connections lacks %q", want)
		}
	}
}

// checkSub runs `nats sub 'baton.>'` until it has shown both a baton and
// a heartbeat (at most 30 s), and checks that each reads as the README
// says.
func checkSub(t *testing.T, cli natsCLI) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := cli.cmd(ctx, "sub", "baton.>")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()

	received := regexp.MustCompile(`^\[#\d+\] Received on "([^"]+)"`)
	batonHeader := regexp.MustCompile(`^Baton: \d+\.\d+$`)
	counter := regexp.MustCompile(`^\d+$`)
	var subject string
	var block []string
	var sawBaton, sawHeartbeat bool
	check := func() {
		switch body := nonEmpty(block); {
		case strings.HasPrefix(subject, "baton.relay.") && len(body) == 2:
			if !batonHeader.MatchString(body[0]) || !counter.MatchString(body[1]) {
				t.Errorf("baton on %s reads %q, want a Baton: id.epoch header and a decimal counter", subject, body)
			}
			sawBaton = true
		case strings.HasPrefix(subject, "baton.heartbeat.") && len(body) == 1:
			var hb struct{ Node, State string }
			if err := json.Unmarshal([]byte(body[0]), &hb); err != nil || "baton.heartbeat."+hb.Node != subject || hb.State != "alive" {
				t.Errorf("heartbeat on %s reads %q (%v), want JSON naming its node, alive", subject, body[0], err)
			}
			sawHeartbeat = true
		}
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && !(sawBaton && sawHeartbeat) {
		if m := received.FindStringSubmatch(sc.Text()); m != nil {
			check()
			subject, block = m[1], nil
			continue
		}
		block = append(block, sc.Text())
	}
	if !sawBaton || !sawHeartbeat {
		t.Fatalf("nats sub 'baton.>' showed a baton: %v, a heartbeat: %v within 30s (%v)", sawBaton, sawHeartbeat, sc.Err())
	}
}

// shortArgs joins args for a log line, cutting long ones.
func shortArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if len(a) > 80 {
			a = fmt.Sprintf("%s...(%d bytes)", a[:20], len(a))
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func nonEmpty(lines []string) []string {
	var out []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkHostilePub publishes, with `nats pub` and the client user, what an
// operator might throw at a relay: garbage, an empty message, a huge one,
// and hand-made batons behind the real one or with an epoch nobody
// announced. Each is counted where it lands and dropped; the real baton
// goes on, its counter never set back. And publishing an epoch
// announcement is refused by the server.
func checkHostilePub(t *testing.T, cli natsCLI, ds []*Daemon) {
	n2 := ds[1].Relay()
	waitFor(t, 10*time.Second, "n2 to have seen baton 0 past counter 10", func() bool { return n2.Position(0).Counter() > 10 })
	epoch := n2.Position(0).Epoch()
	bad, dups, unann := n2.Bad(), n2.Duplicates(), n2.Unannounced()

	subject := relay.Subject("n2")
	cli.run("pub", subject, "hello, relay")                                // no Baton header
	cli.run("pub", subject, "")                                            // empty
	huge := cli.cmd(context.Background(), "pub", subject, "--force-stdin") // larger than any baton; too big for an argument
	huge.Stdin = strings.NewReader(strings.Repeat("9", 200<<10))
	if out, err := huge.CombinedOutput(); err != nil {
		t.Fatalf("nats pub of 200 KiB from stdin: %v: %s", err, out)
	}
	cli.run("pub", subject, "-H", fmt.Sprintf("Baton: 0.%d", epoch), "1")   // behind the real baton 0
	cli.run("pub", subject, "-H", fmt.Sprintf("Baton: 0.%d", epoch+7), "5") // an epoch never announced
	waitFor(t, 5*time.Second, "n2 to count the hand-made messages", func() bool {
		return n2.Bad() == bad+3 && n2.Duplicates() == dups+1 && n2.Unannounced() == unann+1
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := cli.cmd(ctx, "pub", relay.ControlSubject, "0:99:1").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "Permissions Violation") {
		t.Errorf("nats pub on %s by the client user was accepted: %s", relay.ControlSubject, out)
	}
	t.Logf("nats pub %s (refused): %s", relay.ControlSubject, bytes.TrimSpace(out))

	for _, d := range ds {
		if p := d.Relay().Position(0); p.Epoch() != epoch {
			t.Errorf("%s has baton 0 at %v: a hand-made baton changed its epoch from %d", d.cfg.NodeName, p, epoch)
		}
	}
	waitFor(t, 5*time.Second, "the baton still moving", func() bool { return allMoving(ds, 1) })
}
