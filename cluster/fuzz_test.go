package cluster

import "testing"

// FuzzOpen feeds arbitrary bytes to the decoder. It must never panic, and
// anything it accepts must re-seal and re-open to the same announcement.
// Seeds live in testdata/fuzz/FuzzOpen; run longer with
// go test ./cluster -fuzz FuzzOpen -fuzztime 60s.
func FuzzOpen(f *testing.F) {
	c, err := NewCodec("fuzz-secret", "baton", nil)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := c.Seal(sample)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("BTN"))
	f.Add(good[:minPacket])

	f.Fuzz(func(t *testing.T, pkt []byte) {
		a, err := c.Open(pkt)
		if err != nil {
			if ReasonOf(err) == DropNone {
				t.Fatalf("drop without a reason: %v", err)
			}
			return
		}
		again, err := c.Seal(a)
		if err != nil {
			t.Fatalf("accepted %+v but cannot seal it: %v", a, err)
		}
		back, err := c.Open(again)
		if err != nil || back != a {
			t.Fatalf("accepted %+v, re-sealed it opens as %+v, %v", a, back, err)
		}
	})
}
