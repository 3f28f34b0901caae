package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/relay"
	"github.com/nats-io/nats.go"
)

// The chaos summary: every fault scenario adds one row, and TestMain
// prints the table once all tests have run, so one look at the end of
// `make test` says what each fault cost.

// A row is recorded only once its scenario has every baton moving again,
// so "lost" counts batons that were lost and then injected again.
type chaosRow struct {
	scenario  string
	lost      string // batons lost (and injected again)
	dups      uint64 // same-epoch copies dropped behind another (0 unless two copies lived)
	monotonic string // "yes", or what went backwards
	recovery  string // the scenario's recovery time
}

var (
	chaosMu   sync.Mutex
	chaosRows []chaosRow
)

func recordChaos(r chaosRow) {
	chaosMu.Lock()
	defer chaosMu.Unlock()
	chaosRows = append(chaosRows, r)
}

func TestMain(m *testing.M) {
	code := m.Run()
	chaosMu.Lock()
	rows := chaosRows
	chaosMu.Unlock()
	if len(rows) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "\nCHAOS SUMMARY (network namespaces, real batond processes; every row ends with all batons moving)\n")
		fmt.Fprintf(&b, "%-44s %-5s %-4s %-24s %s\n", "scenario", "lost", "dups", "counters monotonic", "recovery")
		for _, r := range rows {
			fmt.Fprintf(&b, "%-44s %-5s %-4d %-24s %s\n", r.scenario, r.lost, r.dups, r.monotonic, r.recovery)
		}
		fmt.Print(b.String())
		// go test shows a passing package's output only with -v, so the
		// summary also goes to a file that `make test` prints.
		if err := os.MkdirAll(filepath.Dir(chaosSummaryFile), 0o755); err == nil {
			os.WriteFile(chaosSummaryFile, []byte(b.String()), 0o644)
		}
	}
	os.Exit(code)
}

// chaosSummaryFile is where the summary is written, relative to this
// package's directory (go test runs there): artifacts/chaos-summary.txt
// at the top of the repository.
const chaosSummaryFile = "../artifacts/chaos-summary.txt"

// watcher follows the cluster's loss-recovery traffic from outside, as a
// NATS client of the nodes (any of them, reconnecting as nodes die), and
// checks that a baton injected again (an epoch announcement on
// baton.control) continues at or above the highest counter that any
// node's progress report showed for it before. Together with the nodes'
// duplicates counters (zero: no copy of a baton's current epoch ever
// arrived behind another copy), that is "counters monotonic per baton",
// observed on the wire rather than assumed.
//
// The leader continues from the highest counter it has heard of. A
// report the watcher got only just before the announcement may not have
// reached the leader yet (on a loaded machine, delivery can lag), and a
// baton that was only slow, not lost, may have moved on meanwhile; its
// old copy is then fenced, so no node takes a counter that went back,
// but the new epoch starts below where the old copy got. The watcher
// counts that as "overtaken" and shows it; it fails the check only when
// the re-injection is below a counter reported a whole loss timeout
// before, which the leader had every chance to hear.
type watcher struct {
	nc *nats.Conn

	mu        sync.Mutex
	highest   map[uint32]uint64 // baton -> highest counter reported
	settled   map[uint32]uint64 // ... in reports older than settleAfter
	pending   []reported        // reports not yet settled, oldest first
	reports   int
	announced int
	overtaken int
	backwards []string
}

type reported struct {
	at      time.Time
	id      uint32
	counter uint64
}

// settleAfter is the e2e clusters' BATON_LOSS_TIMEOUT (the default).
const settleAfter = 2 * time.Second

// watch connects to the nodes' client ports from inside their namespaces
// with the cluster's client credentials.
func watch(t *testing.T, nodes []*node) *watcher {
	t.Helper()
	w := &watcher{highest: map[uint32]uint64{}, settled: map[uint32]uint64{}}
	var urls []string
	byAddr := map[string]*node{}
	for _, n := range nodes {
		hp := netip.AddrPortFrom(n.addr, 4222).String()
		urls = append(urls, "nats://"+hp)
		byAddr[hp] = n
	}
	dial := dialFunc(func(network, addr string) (net.Conn, error) {
		n, ok := byAddr[addr]
		if !ok {
			return nil, fmt.Errorf("watcher: %s is not a node of this test", addr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return n.ns.DialContext(ctx, network, addr)
	})
	nc, err := nats.Connect(strings.Join(urls, ","),
		nats.UserInfo(cluster.ClientUser, cluster.DerivePassword(nodes[0].secret, nodes[0].clusterName, "client")),
		nats.SetCustomDialer(dial),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.Timeout(2*time.Second),
	)
	if err != nil {
		t.Fatalf("watcher: connect: %v", err)
	}
	w.nc = nc
	t.Cleanup(nc.Close)

	for subject, fn := range map[string]nats.MsgHandler{
		relay.ProgressPrefix + "*": w.onProgress,
		relay.ControlSubject:       w.onControl,
	} {
		if _, err := nc.Subscribe(subject, fn); err != nil {
			t.Fatalf("watcher: subscribe %s: %v", subject, err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

type dialFunc func(network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

func (w *watcher) onProgress(m *nats.Msg) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reports++
	relay.ParseReport(m.Data, func(id uint32, p relay.Position) {
		w.highest[id] = max(w.highest[id], p.Counter())
		w.pending = append(w.pending, reported{at: now, id: id, counter: p.Counter()})
	})
}

// settle moves the reports older than settleAfter into settled.
func (w *watcher) settle(now time.Time) {
	i := 0
	for ; i < len(w.pending) && now.Sub(w.pending[i].at) >= settleAfter; i++ {
		r := w.pending[i]
		w.settled[r.id] = max(w.settled[r.id], r.counter)
	}
	w.pending = w.pending[i:]
}

func (w *watcher) onControl(m *nats.Msg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.settle(time.Now())
	relay.ParseReport(m.Data, func(id uint32, p relay.Position) {
		w.announced++
		switch {
		case p.Counter() < w.settled[id]:
			w.backwards = append(w.backwards, fmt.Sprintf("baton %d injected again at %v, below counter %d reported over %v before",
				id, p, w.settled[id], settleAfter))
		case p.Counter() < w.highest[id]:
			w.overtaken++
		}
	})
}

// announcements returns how many batons were injected again.
func (w *watcher) announcements() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.announced
}

// verdict returns "yes" when nothing went backwards, or what did.
func (w *watcher) verdict() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reports == 0 {
		return "NO: no progress report was seen"
	}
	if len(w.backwards) == 0 && w.overtaken == 0 {
		return fmt.Sprintf("yes (%d re-injections)", w.announced)
	}
	if len(w.backwards) == 0 {
		return fmt.Sprintf("yes (%d re-inj., %d overtaken)", w.announced, w.overtaken)
	}
	return fmt.Sprintf("NO (%d): %s", len(w.backwards), strings.Join(w.backwards[:min(3, len(w.backwards))], "; "))
}

// check fails the test when a baton went backwards or a duplicate lived.
func (w *watcher) check(t *testing.T, nodes []*node) uint64 {
	t.Helper()
	if v := w.verdict(); !strings.HasPrefix(v, "yes") {
		t.Errorf("a baton's counter went backwards: %s", v)
	}
	dups := duplicates(nodes)
	if dups != 0 {
		t.Errorf("%d copies of a baton's current epoch arrived behind another copy: two copies of a baton lived", dups)
	}
	return dups
}

// duplicates sums the nodes' duplicates counters.
func duplicates(nodes []*node) uint64 {
	return sumOf(nodes, func(st *status) uint64 { return st.Batons.Duplicates })
}
