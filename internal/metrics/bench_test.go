package metrics

import (
	"net"
	"testing"
	"time"

	"github.com/baton-relay/baton/internal/hist"
)

// BenchmarkIntervalToDogStatsD is the whole work of one interval with
// DogStatsD on, except reading the node's counters: the report of two
// snapshots (a full latency histogram each), its points, and sending
// them to a real UDP listener on loopback, flush included. Its ns/op
// divided by BATON_METRICS_INTERVAL is the share of a core metrics cost.
func BenchmarkIntervalToDogStatsD(b *testing.B) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	go func() { // drain, so the socket buffer never fills
		buf := make([]byte, 65536)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	b.Setenv(EnvURL, "udp://"+c.LocalAddr().String())
	d := newDogStatsD("udp://"+c.LocalAddr().String(), []string{"host:n1", "cluster:bench"})
	if err := d.connect(time.Second); err != nil {
		b.Fatal(err)
	}
	defer d.close()

	var h hist.Histogram
	for i := range 100_000 {
		h.Record(time.Duration(i) * 37 * time.Nanosecond)
	}
	prev := snapshotAt(time.Unix(0, 0), 0)
	prev.Latency = h.Snapshot()
	for i := range 100_000 {
		h.Record(time.Duration(i) * 41 * time.Nanosecond)
	}
	cur := snapshotAt(time.Unix(1, 0), 1_000_000)
	cur.Latency = h.Snapshot()

	b.ReportAllocs()
	for b.Loop() {
		d.send(Interval(prev, cur))
	}
}
