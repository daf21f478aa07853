package ratelimit

import (
	"context"
	"testing"
	"time"
)

func TestNilDoesNotLimit(t *testing.T) {
	var l *Limiter
	if err := l.Wait(context.Background(), 1<<30); err != nil {
		t.Fatal(err)
	}
	if New(0, nil) != nil {
		t.Fatal("a rate of 0 should be no limiter")
	}
}

// TestWaitPaces checks the pacing by its effect on a context deadline,
// not by timing: at 64 KiB/s, 1 MiB cannot pass before a 100 ms deadline,
// and the limiter says so instead of blocking past it.
func TestWaitPaces(t *testing.T) {
	l := New(64<<10, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, 1<<20); err == nil {
		t.Fatal("1 MiB passed a 64 KiB/s limit within 100 ms")
	}
}

func TestInactiveWindowPassesAll(t *testing.T) {
	l := New(1<<10, func(time.Time) bool { return false })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.Wait(ctx, 100<<20); err != nil {
		t.Fatalf("outside its window the limiter held bytes back: %v", err)
	}
}
