package cluster

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// noMulticastEnv is set by scripts/test-arch.sh once
// TestEmulatorMulticastProbe has failed under an emulator.
const noMulticastEnv = "TEST_ARCH_NO_MULTICAST_IF"

// skipIfEmulatorLacksMulticast skips a test whose node could not open
// discovery because the emulator does not translate the socket options
// that pin multicast to lo (ENOPROTOOPT), and says so. Only then: without
// noMulticastEnv, or with any other error, the caller fails as usual.
func skipIfEmulatorLacksMulticast(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(noMulticastEnv) != "" && errors.Is(err, syscall.ENOPROTOOPT) {
		t.Skipf("NOT RUN under this emulator, which cannot pin multicast to lo (%v); it runs natively", err)
	}
}

// TestEmulatorMulticastProbe checks that discovery can pin its socket to
// lo (join the group there and send through it) and hears its own
// announcement looped back. Every multi-node test depends on this.
//
// scripts/test-arch.sh runs it first under each qemu-user emulator: qemu
// 7.2 does not translate IP_MULTICAST_IF or MCAST_JOIN_GROUP, and this
// test then fails with the emulator's error. The script reports it and
// sets noMulticastEnv, so that the tests whose nodes cannot open
// discovery there skip, by name, instead of failing.
func TestEmulatorMulticastProbe(t *testing.T) {
	codec, err := NewCodec("probe-secret", "probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testNodeConfig(t, "probe", freeUDPPort(t))
	d, err := OpenDiscovery(DiscoveryConfig{
		Group:     cfg.Group,
		Port:      cfg.DiscoveryPort,
		Interface: cfg.Interface,
		TTL:       1,
		Interval:  100 * time.Millisecond,
		Codec:     codec,
		Node:      "probe",
		Boot:      1,
		RouteURL:  "nats-route://127.0.0.1:1",
		Logger:    cfg.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	waitFor(t, 10*time.Second, "our own announcement looped back on lo", func() bool {
		return d.Stats().Dropped["self"] > 0
	})
}
