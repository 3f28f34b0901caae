package relay

import (
	"slices"
	"testing"
	"time"
)

func TestPositionOrdersByEpochThenCounter(t *testing.T) {
	if !(Pos(1, 100) < Pos(1, 101) && Pos(1, MaxCounter) < Pos(2, 0)) {
		t.Error("positions do not order by epoch, then counter")
	}
	p := Pos(7, 12345)
	if p.Epoch() != 7 || p.Counter() != 12345 || p.String() != "12345@7" {
		t.Errorf("round trip: %v", p)
	}
}

func TestTableRaiseKeepsTheHighest(t *testing.T) {
	tb := NewTable(4)
	tb.Raise(1, Pos(1, 10))
	if got := tb.Raise(1, Pos(1, 5)); got != Pos(1, 10) {
		t.Errorf("a lower position replaced a higher one: %v", got)
	}
	tb.Raise(1, Pos(2, 3)) // a newer epoch wins even with a lower counter
	if got := tb.Get(1); got != Pos(2, 3) {
		t.Errorf("got %v, want 3@2", got)
	}
	if tb.Raise(99, Pos(1, 1)); tb.Get(99) != 0 {
		t.Error("an id beyond the table was stored")
	}
}

func TestReportRoundTripSendsOnlyChanges(t *testing.T) {
	tb := NewTable(4)
	last := make([]Position, 4)
	tb.Raise(0, Pos(1, 7))
	tb.Raise(3, Pos(2, 900))

	rep := tb.AppendReport(nil, last, false)
	if string(rep) != "0:1:7 3:2:900" {
		t.Fatalf("report %q", rep)
	}
	var got []Recovery
	if err := ParseReport(rep, func(id uint32, p Position) { got = append(got, Recovery{ID: id, Last: p}) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []Recovery{{ID: 0, Last: Pos(1, 7)}, {ID: 3, Last: Pos(2, 900)}}) {
		t.Errorf("parsed %+v", got)
	}

	tb.Raise(3, Pos(2, 901))
	if rep := tb.AppendReport(nil, last, false); string(rep) != "3:2:901" {
		t.Errorf("second report %q, want only the change", rep)
	}
	if rep := tb.AppendReport(nil, last, false); len(rep) != 0 {
		t.Errorf("report with nothing new: %q", rep)
	}
	// A full report repeats everything known, for a leader that has
	// just started and knows nothing.
	if rep := tb.AppendReport(nil, last, true); string(rep) != "0:1:7 3:2:901" {
		t.Errorf("full report %q, want every known position", rep)
	}
}

func TestParseReportRejects(t *testing.T) {
	for _, in := range []string{"1", "1:2", "1:2:3:4", "a:1:1", "1:70000:1", "1:1:-1", "1::1", "1:1:1 x"} {
		if err := ParseReport([]byte(in), func(uint32, Position) {}); err == nil {
			t.Errorf("ParseReport(%q) accepted", in)
		}
	}
}

// A baton that stops moving is recovered once per timeout, at the next
// epoch and the next counter; one that keeps moving never is.
func TestLossDetector(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	d := NewLossDetector(2, 2*time.Second, t0)

	d.Observe(0, Pos(1, 10), at(100))
	d.Observe(1, Pos(1, 20), at(100))
	if lost := d.Lost(at(1999)); len(lost) != 0 {
		t.Fatalf("lost before the timeout: %+v", lost)
	}
	for ms := 200; ms <= 3000; ms += 200 {
		d.Observe(1, Pos(1, uint64(20+ms)), at(ms)) // baton 1 keeps moving
	}
	lost := d.Lost(at(2100))
	want := []Recovery{{ID: 0, Last: Pos(1, 10), Next: Pos(2, 11)}}
	if !slices.Equal(lost, want) {
		t.Fatalf("lost %+v, want %+v", lost, want)
	}
	if got := d.Moving(at(2100)); got != 2 {
		t.Errorf("moving %d right after recovery, want 2 (1 moves, 0 was just injected again)", got)
	}
	if again := d.Lost(at(2200)); len(again) != 0 {
		t.Errorf("recovered twice within one timeout: %+v", again)
	}

	// A late report of the old epoch does not count as progress.
	d.Observe(0, Pos(1, 50), at(2500))
	if lost := d.Lost(at(4100)); len(lost) != 1 || lost[0].Next != Pos(3, 12) {
		t.Errorf("second loss: %+v, want recovery at 12@3", lost)
	}
}

// A new leader gives every baton a full timeout before calling it lost,
// even batons it has never heard of.
func TestLossDetectorGraceForNewLeader(t *testing.T) {
	t0 := time.Unix(100, 0)
	d := NewLossDetector(3, time.Second, t0)
	if lost := d.Lost(t0.Add(999 * time.Millisecond)); len(lost) != 0 {
		t.Errorf("lost %+v before a whole timeout", lost)
	}
	if lost := d.Lost(t0.Add(time.Second)); len(lost) != 3 || lost[0].Next != Pos(1, 1) {
		t.Errorf("never-seen batons: %+v, want all three at 1@1", lost)
	}
}
