package job

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/swdist/swdist/gossip"
)

// Window is a daily maintenance window in the machine's local time, from
// Start to End (minutes after midnight); End before Start spans midnight.
type Window struct{ Start, End int }

// ParseWindow reads "HH:MM-HH:MM".
func ParseWindow(s string) (Window, error) {
	var h1, m1, h2, m2 int
	if n, err := fmt.Sscanf(s, "%d:%d-%d:%d", &h1, &m1, &h2, &m2); err != nil || n != 4 ||
		h1 < 0 || h1 > 23 || h2 < 0 || h2 > 23 || m1 < 0 || m1 > 59 || m2 < 0 || m2 > 59 || h1*60+m1 == h2*60+m2 {
		return Window{}, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM in the machines' local time, e.g. 22:00-04:30", s)
	}
	return Window{Start: h1*60 + m1, End: h2*60 + m2}, nil
}

func (w Window) String() string {
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.Start/60, w.Start%60, w.End/60, w.End%60)
}

// contains reports whether minute m of the day is in the window.
func (w Window) contains(m int) bool {
	if w.Start < w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End
}

// Contains reports whether t, in the machine's local time, is within the
// window.
func (w Window) Contains(t time.Time) bool {
	t = t.Local()
	return w.contains(t.Hour()*60 + t.Minute())
}

// Next is t if t is within the window, else the window's next opening.
func (w Window) Next(t time.Time) time.Time {
	if w.contains(t.Hour()*60 + t.Minute()) {
		return t
	}
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	open := day.Add(time.Duration(w.Start) * time.Minute)
	if !open.After(t) {
		open = day.AddDate(0, 0, 1).Add(time.Duration(w.Start) * time.Minute)
	}
	return open
}

// Schedule is when a manifest's run may start on this machine.
type Schedule struct {
	Spread time.Duration // start jittered over [0, Spread) after not-before
	Window *Window
}

// Manifest parameters of the schedule.
const (
	ParamSpread = "spread"
	ParamWindow = "window"
)

// ScheduleOf reads a manifest's schedule parameters.
func ScheduleOf(m gossip.Manifest) (Schedule, error) {
	var s Schedule
	if v := m.Params[ParamSpread]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return s, fmt.Errorf("spread %q: want a duration like 30m", v)
		}
		s.Spread = d
	}
	if v := m.Params[ParamWindow]; v != "" {
		w, err := ParseWindow(v)
		if err != nil {
			return s, err
		}
		s.Window = &w
	}
	return s, nil
}

// Start is when a run may start: after not-before, a random share of the
// spread, then within the window. rng nil: the shared source.
func (s Schedule) Start(notBefore time.Time, rng *rand.Rand) time.Time {
	t := notBefore
	if s.Spread > 0 {
		if rng != nil {
			t = t.Add(time.Duration(rng.Int64N(int64(s.Spread))))
		} else {
			t = t.Add(rand.N(s.Spread))
		}
	}
	if s.Window != nil {
		t = s.Window.Next(t.Local())
	}
	return t
}
