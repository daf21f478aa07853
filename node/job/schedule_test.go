package job

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/swdist/swdist/gossip"
)

func TestWindowNext(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 11, 25, h, m, 0, 0, time.Local) }
	tests := []struct {
		window string
		now    time.Time
		want   time.Time
	}{
		{"22:00-04:00", at(23, 10), at(23, 10)},               // inside, before midnight
		{"22:00-04:00", at(3, 59), at(3, 59)},                 // inside, after midnight
		{"22:00-04:00", at(4, 0), at(22, 0)},                  // just closed: tonight
		{"22:00-04:00", at(12, 0), at(22, 0)},                 // day: tonight
		{"01:00-02:00", at(12, 0), at(1, 0).AddDate(0, 0, 1)}, // tomorrow
		{"01:00-02:00", at(0, 30), at(1, 0)},                  // later tonight
		{"09:30-17:00", at(9, 30), at(9, 30)},                 // at the opening
	}
	for _, tt := range tests {
		w, err := ParseWindow(tt.window)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Next(tt.now); !got.Equal(tt.want) {
			t.Errorf("%s from %s: %s, want %s", tt.window, tt.now.Format("15:04"), got, tt.want)
		}
	}
	for _, bad := range []string{"", "22-04", "25:00-01:00", "10:00-10:00", "10:61-11:00", "evening"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}

func TestSpreadStaysWithin(t *testing.T) {
	s, err := ScheduleOf(gossip.Manifest{Params: map[string]string{ParamSpread: "10m"}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	nb := time.Now()
	var lo, hi time.Duration = time.Hour, 0
	for range 1000 {
		d := s.Start(nb, rng).Sub(nb)
		if d < 0 || d >= 10*time.Minute {
			t.Fatalf("start %s after not-before, want within the 10m spread", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > time.Minute || hi < 9*time.Minute {
		t.Errorf("1,000 starts spread over [%s, %s]: not spread", lo, hi)
	}
}
