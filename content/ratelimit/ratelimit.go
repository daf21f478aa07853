// Package ratelimit paces the bytes a node moves over a slow link: a token
// bucket of bytes per second shared by every transfer that crosses the
// link, optionally in force only at some times of day.
package ratelimit

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces bytes. A nil *Limiter does not limit.
type Limiter struct {
	lim    *rate.Limiter
	burst  int
	active func(time.Time) bool
}

// New limits to bytesPerSec; active, if not nil, says when the limit is in
// force (outside it bytes pass unpaced). bytesPerSec <= 0 is no limit: New
// returns nil.
func New(bytesPerSec float64, active func(time.Time) bool) *Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	// A small bucket keeps bursts short: a tenth of a second of traffic,
	// but at least 16 KiB and at most 1 MiB.
	burst := min(max(int(bytesPerSec/10), 16<<10), 1<<20)
	return &Limiter{lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst), burst: burst, active: active}
}

// Wait blocks until n more bytes may pass, or ctx ends.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if l == nil || (l.active != nil && !l.active(time.Now())) {
		return nil
	}
	for n > 0 {
		step := min(n, l.burst)
		if err := l.lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}

// Rate is the limit in bytes per second (0 for none).
func (l *Limiter) Rate() float64 {
	if l == nil {
		return 0
	}
	return float64(l.lim.Limit())
}
