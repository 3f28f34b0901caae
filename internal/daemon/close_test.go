package daemon

import (
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// Close returns promptly even when it lands while the relay is dialling
// its peers' servers: a dial that completes after the relay stopped must
// not leave a reader running (it once kept Close waiting for as long as
// the peer ran). A newcomer is closed at several moments around the time
// it learns of its peers and starts dialling them.
func TestCloseWhileDialling(t *testing.T) {
	ds := startDaemons(t, 2, nil)
	waitFor(t, 20*time.Second, "2 members", func() bool { return len(ds[0].Status().Members) == 2 })
	port := ds[0].cfg.MulticastPort

	for i := range 6 {
		cfg := testConfig(t, fmt.Sprintf("late%d", i), port)
		d, err := Start(cfg, slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatal(err)
		}
		// Close as soon as it sees its peers (the first dials start
		// then), or some milliseconds later.
		waitFor(t, 20*time.Second, "the newcomer to see its peers", func() bool { return len(d.Node().View().Alive) == 3 })
		time.Sleep(time.Duration(i%4) * 5 * time.Millisecond)

		closed := make(chan struct{})
		go func() { d.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Close did not return within 30s", i)
		}
	}
}
