package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/relay"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
)

// pageState is what the live page shows, read from its DOM.
type pageState struct {
	Series  []pageSeries `json:"series"`
	Members [][2]string  `json:"members"` // node, state
	Summary string       `json:"summary"`
	Losses  int          `json:"losses"` // loss markers on the chart
	Events  string       `json:"events"`
	Error   string       `json:"error"`
}

// pageSeries is one line of the chart.
type pageSeries struct {
	Node     string  `json:"node"`
	Points   int     `json:"points"` // points drawn
	LastT    float64 `json:"lastT"`  // time of the newest, unix ms
	LastRate float64 `json:"lastRate"`
	D        string  `json:"d"` // the SVG path
}

func (st pageState) line(node string) pageSeries {
	for _, s := range st.Series {
		if s.Node == node {
			return s
		}
	}
	return pageSeries{}
}

const readPage = `(() => {
	const q = s => [...document.querySelectorAll(s)];
	return {
		series: q("#chart path.series").map(p => ({
			node: p.dataset.node, points: +p.dataset.points,
			lastT: +(p.dataset.lastT || 0), lastRate: +(p.dataset.lastRate || 0),
			d: p.getAttribute("d"),
		})),
		members: q("#members tbody tr").map(tr => [tr.dataset.node, tr.querySelector(".state").textContent]),
		summary: document.getElementById("summary").textContent,
		losses: q("#chart g.event.loss").length,
		events: document.getElementById("events").textContent,
		error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
	};
})()`

// The live page of a real 3-node cluster, in headless Chromium: the chart
// draws a line for every node, the lines move while batons move, the
// members table and the leader are right, a lost baton is marked on the
// chart, and a crashed member shows as dead. A screenshot goes to
// artifacts/live-page/.
func TestLivePageInBrowser(t *testing.T) {
	browser := requireChromium(t)
	const batons = 4
	ds := startDaemons(t, 3, func(c *Config) { c.Batons = batons })
	waitFor(t, 10*time.Second, "all batons moving", func() bool { return allMoving(ds, batons) })

	ctx := newBrowser(t, browser)
	nav, cancel := bounded(ctx)
	defer cancel()
	if err := chromedp.Do(nav, chromedp.Navigate("http://"+ds[0].HTTPAddr()+"/")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	read := func() pageState {
		t.Helper()
		c, cancel := bounded(ctx)
		defer cancel()
		st, err := chromedp.Run(c, chromedp.Evaluate[pageState](readPage))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return st
	}
	var st pageState
	waitPage := func(within time.Duration, what string, cond func(pageState) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for st = read(); !cond(st); st = read() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for the page to show %s; it shows %+v", within, what, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	nodes := []string{"n1", "n2", "n3"}
	waitPage(15*time.Second, "a moving line for every node", func(st pageState) bool {
		for _, n := range nodes {
			if s := st.line(n); s.Points < 3 || s.LastRate <= 0 {
				return false
			}
		}
		return len(st.Series) == len(nodes)
	})
	waitPage(10*time.Second, "three alive members and leader n1", func(st pageState) bool {
		return slices.Equal(st.Members, [][2]string{{"n1", "alive"}, {"n2", "alive"}, {"n3", "alive"}}) &&
			strings.Contains(st.Summary, "leader n1") && st.Error == ""
	})

	// The chart moves: every line gets newer points, drawn differently.
	first := st
	waitPage(10*time.Second, "newer points on every line", func(st pageState) bool {
		for _, n := range nodes {
			s, was := st.line(n), first.line(n)
			if s.LastT <= was.LastT || s.D == was.D || s.LastRate <= 0 {
				return false
			}
		}
		return true
	})
	if hold, _ := time.ParseDuration(os.Getenv("LIVE_PAGE_HOLD")); hold > 0 {
		t.Logf("LIVE_PAGE_HOLD: letting batons run for %v before the loss", hold)
		time.Sleep(hold) // a longer chart for the README's screenshot, on request only
	}

	// A loss: announce a new epoch of baton 0 as a leader would, so its
	// copy in flight dies; the leader (n1) finds it lost and injects it
	// again, and its page marks the loss.
	loseBaton(t, ds)
	waitPage(10*time.Second, "a loss marked on the chart", func(st pageState) bool {
		return st.Losses >= 1 && strings.Contains(st.Events, "lost")
	})
	saveScreenshot(t, ctx, "live-page.png")

	// A crash: n3 shows as dead (after suspect) and n1, n2 keep moving.
	ds[2].Close()
	waitPage(10*time.Second, "n3 dead", func(st pageState) bool {
		return len(st.Members) == 3 && st.Members[2] == [2]string{"n3", "dead"} &&
			strings.Contains(st.Events, "n3 is dead")
	})
	before := st
	waitPage(10*time.Second, "n1 and n2 still moving", func(st pageState) bool {
		for _, n := range nodes[:2] {
			if s := st.line(n); s.LastT <= before.line(n).LastT || s.LastRate <= 0 {
				return false
			}
		}
		return true
	})
	saveScreenshot(t, ctx, "live-page-after-crash.png")
}

// Without a browser: "/" serves the page, and GET /history has a rising
// line for every member of a relaying cluster.
func TestHistoryEndpoint(t *testing.T) {
	ds := startDaemons(t, 3, nil)
	base := "http://" + ds[0].HTTPAddr()

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(body), `<script src="live/app.js">`) {
		t.Fatalf("GET /: %s %q, body %.200s", resp.Status, resp.Header.Get("Content-Type"), body)
	}

	rising := func() bool {
		resp, err := http.Get(base + "/history")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var raw struct {
			Node   string `json:"node"`
			Series []struct {
				Node   string        `json:"node"`
				Points [][2]*float64 `json:"points"`
			} `json:"series"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
			t.Fatalf("decode /history: %v", err)
		}
		var names []string
		for _, s := range raw.Series {
			names = append(names, s.Node)
			last := s.Points[max(len(s.Points)-1, 0):]
			if len(s.Points) < 2 || last[0][1] == nil || *last[0][1] <= 0 {
				return false
			}
		}
		slices.Sort(names)
		return raw.Node == "n1" && slices.Equal(names, []string{"n1", "n2", "n3"})
	}
	waitFor(t, 15*time.Second, "a rising line for n1, n2 and n3 in n1's /history", rising)
}

// loseBaton makes the cluster lose baton 0, the way
// TestStaleAndForgedBatonsAreDropped does, and waits for the leader to
// inject it again.
func loseBaton(t *testing.T, ds []*Daemon) {
	t.Helper()
	// Epochs are the nodes' to announce: the client user may not.
	nc, err := nats.Connect(ds[1].Node().Server().ClientURL(),
		nats.UserInfo(cluster.NodeUser, cluster.DerivePassword("test-secret", "dtest", "node")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	next := ds[0].Relay().Position(0).Counter() + 1_000_000
	if err := nc.Publish(relay.ControlSubject, fmt.Appendf(nil, "0:2:%d", next)); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	waitFor(t, 10*time.Second, "the leader to inject baton 0 again", func() bool {
		return ds[0].Relay().Reinjected() >= 1
	})
}

// requireChromium returns the path of Debian's chromium, or skips the
// test loudly without it (failing it instead when CI=true: a skipped
// test in CI is a test that did not run).
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "SKIP: live page browser test not run: chromium not found in PATH. " +
		"Install Debian's chromium package (scripts/install-deps.sh does it when run as root)."
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true, so a skip is a failure. " + msg)
	}
	t.Skip(msg)
	return ""
}

// newBrowser starts headless Chromium with a fresh profile and returns a
// chromedp context for one tab; the browser is stopped at cleanup. The
// flags keep it off the network: it must fetch nothing but the page
// (this machine's network is closed, and a test must not reach out).
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	ctx, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
	})
	// The first run starts the browser, which lives as long as the
	// context of that run: so no timeout here, and one on every call
	// after (see bounded).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// bounded limits one browser call, so a browser that stops answering
// fails the test instead of hanging it.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 30*time.Second)
}

// saveScreenshot writes the whole page as a PNG under artifacts/live-page/
// at the top of the repository (not committed; see .gitignore).
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	c, cancel := bounded(ctx)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "artifacts", "live-page"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
