package node

import (
	"testing"
	"time"
)

// TestProgressGate: a fetch reports its start, then at most every 2 s and
// only after another 10 % (or 30 s with any progress on a slow link), and
// never its end: a fetch of any size sends about ten reports.
func TestProgressGate(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const total = 1000
	steps := []struct {
		at          time.Duration
		held, total int64
		want        bool
	}{
		{0, 0, 900, true},                       // the start, with the manifest's size
		{10 * time.Millisecond, 0, total, true}, // the root says the real total
		{100 * time.Millisecond, 50, total, false},
		{3 * time.Second, 90, total, false},     // 2 s passed, not 10 % more
		{3 * time.Second, 120, total, true},     // both
		{4 * time.Second, 400, total, false},    // 10 % more, but within 2 s
		{5 * time.Second, 400, total, true},     //
		{6 * time.Second, 400, total, false},    // no progress
		{40 * time.Second, 410, total, true},    // slow: 30 s with some progress
		{41 * time.Second, 990, total, false},   // within 2 s
		{50 * time.Second, total, total, false}, // all held: the next state says so
	}
	g := progressGate{every: progressEvery, step: progressStep, idle: progressIdle}
	for i, s := range steps {
		if got := g.due(at(s.at), s.held, s.total); got != s.want {
			t.Errorf("step %d (%s, %d of %d): due %v, want %v", i, s.at, s.held, s.total, got, s.want)
		}
	}
	// Whole fetches that bring a block every 10 ms: one of 100 s sends
	// about 1/step reports; a slow one of 1,000 s one per 30 s at most.
	for _, tc := range []struct {
		blocks   int64
		min, max int
	}{{10_000, 9, 11}, {100_000, 30, 35}} {
		g = progressGate{every: progressEvery, step: progressStep, idle: progressIdle}
		n := 0
		for i := int64(0); i <= tc.blocks; i++ {
			if g.due(at(time.Duration(i)*10*time.Millisecond), i*100, tc.blocks*100) {
				n++
			}
		}
		if n < tc.min || n > tc.max {
			t.Errorf("a fetch of %d blocks, 10 ms apart, sent %d progress reports, want %d to %d", tc.blocks, n, tc.min, tc.max)
		}
	}
}
