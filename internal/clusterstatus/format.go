package clusterstatus

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/baton-relay/baton/internal/textfmt"
)

// Format writes res for people: a heading, one row per node, and the
// round-trip matrix. timeout is the one the query used, for the notes on
// nodes that did not answer.
func Format(w io.Writer, res *Result, timeout time.Duration) {
	view := viewpoint(res)
	leader := "none"
	if view != nil && view.Leader != "" {
		leader = view.Leader
	}
	cluster := ""
	if view != nil {
		cluster = view.Cluster
	}
	fmt.Fprintf(w, "cluster %s: %d node(s) answered via %s, leader %s\n\n",
		cluster, len(res.Nodes), res.Via, leader)

	rows := [][]string{{"node", "state", "hops/s", "p50 µs", "p99 µs", "routes", "uptime", "version"}}
	for _, st := range res.Nodes {
		p50, p99 := latency(st)
		rows = append(rows, []string{
			st.Node, stateIn(view, st.Node, "alive"),
			textfmt.Thousands(uint64(math.Round(st.Rate.HopsPerSecond))),
			p50, p99,
			fmt.Sprint(len(st.Routes)),
			uptime(st.UptimeSeconds),
			st.Version,
		})
	}
	for _, name := range append(slices.Clone(res.Missing), departed(res)...) {
		rows = append(rows, []string{name, stateIn(view, name, "?"), "-", "-", "-", "-", "-", "-"})
	}
	writeTable(w, rows)

	for _, name := range res.Missing {
		fmt.Fprintf(w, "%s: listed alive by %s, but no answer on %s within %v\n",
			name, strings.Join(listers(res, name), ", "), StatusSubject, timeout)
	}
	if res.RTT != nil || len(res.RTTErrors) > 0 {
		fmt.Fprintln(w)
		formatMatrix(w, res)
	}
}

// viewpoint is the node whose membership view the table shows: the one
// the query went through, else the first that answered.
func viewpoint(res *Result) *NodeStatus {
	for i := range res.Nodes {
		if res.Nodes[i].Node == res.Via {
			return &res.Nodes[i]
		}
	}
	if len(res.Nodes) > 0 {
		return &res.Nodes[0]
	}
	return nil
}

func stateIn(view *NodeStatus, name, fallback string) string {
	if view != nil {
		if s := view.stateOf(name); s != "" {
			return s
		}
	}
	return fallback
}

// latency prefers the last interval's percentiles, falling back to those
// since start (a node with no recent baton back, or an older version).
func latency(st NodeStatus) (p50, p99 string) {
	l := st.Latency
	switch {
	case l.Interval != nil && l.Interval.Samples > 0:
		return fmt.Sprintf("%.1f", l.Interval.P50us), fmt.Sprintf("%.1f", l.Interval.P99us)
	case l.Samples > 0:
		return fmt.Sprintf("%.1f", l.P50us), fmt.Sprintf("%.1f", l.P99us)
	}
	return "-", "-"
}

func uptime(s float64) string {
	return (time.Duration(s) * time.Second).String()
}

// departed returns the members some node still lists as suspect, dead
// or left: they are not expected to answer, but an operator wants to
// see them.
func departed(res *Result) []string {
	var out []string
	for _, st := range res.Nodes {
		for _, m := range st.MemberStates {
			known := slices.ContainsFunc(res.Nodes, func(n NodeStatus) bool { return n.Node == m.Name })
			if !known && !slices.Contains(res.Missing, m.Name) && !slices.Contains(out, m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// listers returns the nodes that list name among their alive members.
func listers(res *Result, name string) []string {
	var out []string
	for _, st := range res.Nodes {
		if slices.Contains(st.Members, name) {
			out = append(out, st.Node)
		}
	}
	return out
}

// formatMatrix prints the round-trip times, row pinging column, in
// milliseconds, then the reason for every cell it could not fill.
func formatMatrix(w io.Writer, res *Result) {
	names := make([]string, len(res.Nodes))
	for i, st := range res.Nodes {
		names[i] = st.Node
	}
	fmt.Fprintln(w, "round-trip time in ms, row pings column (median of each pair's pings):")
	rows := [][]string{append([]string{""}, names...)}
	var notes []string
	for _, from := range names {
		row := []string{from}
		for _, to := range names {
			row = append(row, cell(res, from, to, &notes))
		}
		rows = append(rows, row)
	}
	writeTable(w, rows)
	for _, from := range slices.Sorted(maps.Keys(res.RTTErrors)) {
		notes = append(notes, fmt.Sprintf("%s: %s", from, res.RTTErrors[from]))
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

func cell(res *Result, from, to string, notes *[]string) string {
	if from == to {
		return "-"
	}
	probes, ok := res.RTT[from]
	if !ok {
		return "?" // the node's own error is noted once, not per cell
	}
	p, ok := probes[to]
	switch {
	case !ok:
		*notes = append(*notes, fmt.Sprintf("%s -> %s: not measured", from, to))
		return "?"
	case p.Answered == 0:
		*notes = append(*notes, fmt.Sprintf("%s -> %s: %s", from, to, p.Error))
		return "x"
	case p.Error != "":
		*notes = append(*notes, fmt.Sprintf("%s -> %s: %d of %d pings answered: %s", from, to, p.Answered, p.Sent, p.Error))
	}
	return fmt.Sprintf("%.3f", p.MedianUS/1000)
}

// writeTable aligns rows into columns: the first column to the left, the
// others (numbers, mostly) to the right, two spaces apart.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			if i == 0 {
				b.WriteString(c + pad)
				continue
			}
			b.WriteString("  " + pad + c)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
