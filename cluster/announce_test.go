package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func testCodec(t testing.TB, secret, cluster string) *Codec {
	t.Helper()
	c, err := NewCodec(secret, cluster, nil)
	if err != nil {
		t.Fatalf("NewCodec: %v", err)
	}
	return c
}

var sample = Announcement{
	Node:     "pi-01",
	Boot:     0x0123456789abcdef,
	Seq:      42,
	RouteURL: "nats-route://192.168.1.10:6222",
}

func TestAnnouncementRoundTrip(t *testing.T) {
	c := testCodec(t, "s3cret", "baton")
	for _, a := range []Announcement{sample, {Node: "x", Boot: 1, Seq: 1, Leaving: true}} {
		pkt, err := c.Seal(a)
		if err != nil {
			t.Fatalf("Seal(%+v): %v", a, err)
		}
		got, err := c.Open(pkt)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if got != a {
			t.Errorf("round trip: got %+v, want %+v", got, a)
		}
	}
}

// Sealing twice must give different packets (fresh nonce), or a passive
// listener could tell announcements apart only by their sequence number.
func TestSealUsesFreshNonce(t *testing.T) {
	c := testCodec(t, "s3cret", "baton")
	p1, _ := c.Seal(sample)
	p2, _ := c.Seal(sample)
	if bytes.Equal(p1, p2) {
		t.Fatal("two seals of the same announcement are identical")
	}
}

func TestOpenDropsByReason(t *testing.T) {
	mine := testCodec(t, "s3cret", "baton")
	good, err := mine.Seal(sample)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, _ := testCodec(t, "another", "baton").Seal(sample)
	otherCluster, _ := testCodec(t, "s3cret", "lab").Seal(sample)
	badVersion := bytes.Clone(good)
	badVersion[3] = ProtocolVersion + 1
	badMagic := bytes.Clone(good)
	badMagic[0] = 'X'

	tests := []struct {
		name string
		pkt  []byte
		want DropReason
	}{
		{"empty", nil, DropShort},
		{"one byte", []byte{'B'}, DropShort},
		{"header only", good[:headerSize], DropShort},
		{"too big", make([]byte, MaxPacketSize+1), DropTooBig},
		{"64 KiB of zeros", make([]byte, 65507), DropTooBig},
		{"not baton", bytes.Repeat([]byte("hello"), 20), DropMagic},
		{"other version", badVersion, DropVersion},
		{"other cluster", otherCluster, DropForeign},
		{"other secret", otherSecret, DropAuth},
		{"bad magic", badMagic, DropMagic},
		{"truncated tag", good[:len(good)-1], DropAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mine.Open(tt.pkt)
			if err == nil {
				t.Fatal("accepted a packet that must be dropped")
			}
			if got := ReasonOf(err); got != tt.want {
				t.Errorf("reason %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

// Every single flipped bit anywhere in a packet must make it fail: the
// header is authenticated data, the body is sealed.
func TestOpenRejectsEveryFlippedBit(t *testing.T) {
	c := testCodec(t, "s3cret", "baton")
	good, _ := c.Seal(sample)
	for i := range good {
		for bit := 0; bit < 8; bit++ {
			pkt := bytes.Clone(good)
			pkt[i] ^= 1 << bit
			if a, err := c.Open(pkt); err == nil {
				t.Fatalf("flipping bit %d of byte %d was accepted: %+v", bit, i, a)
			}
		}
	}
}

func TestOpenRejectsEveryTruncation(t *testing.T) {
	c := testCodec(t, "s3cret", "baton")
	good, _ := c.Seal(sample)
	for n := 0; n < len(good); n++ {
		if _, err := c.Open(good[:n]); err == nil {
			t.Fatalf("packet truncated to %d of %d bytes was accepted", n, len(good))
		}
	}
}

func TestSealRejectsBadFields(t *testing.T) {
	c := testCodec(t, "s3cret", "baton")
	for _, a := range []Announcement{
		{Node: ""},
		{Node: strings.Repeat("n", maxNameLen+1)},
		{Node: "ok", RouteURL: strings.Repeat("u", maxURLLen+1)},
	} {
		if _, err := c.Seal(a); err == nil {
			t.Errorf("Seal(%q, url %d bytes) succeeded", a.Node, len(a.RouteURL))
		}
	}
}

func TestNewCodecNeedsSecretAndCluster(t *testing.T) {
	if _, err := NewCodec("", "baton", nil); err == nil {
		t.Error("empty secret accepted")
	}
	if _, err := NewCodec("s", "", nil); err == nil {
		t.Error("empty cluster accepted")
	}
}

func TestDropErrorNamesReason(t *testing.T) {
	err := drop(DropForeign, "")
	if !strings.Contains(err.Error(), "foreign_cluster") {
		t.Errorf("error %q does not name its reason", err)
	}
	if ReasonOf(errors.New("other")) != DropMalformed {
		t.Error("an error without a reason should count as malformed")
	}
	for _, r := range DropReasons() {
		if strings.HasPrefix(r.String(), "DropReason(") || r.String() == "none" {
			t.Errorf("reason %d has no name", int(r))
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "pi-01", "node_2", strings.Repeat("x", 64)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "pi.local", "a b", "a*", "a>", strings.Repeat("x", 65), "é"} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", bad)
		}
	}
}
