package job

import (
	"context"
	"slices"
	"sync"
)

// turns lets at most n runs go at once, the waiting one with the lowest
// ticket first: jobs run in the order their manifests reached this node,
// whatever the order their goroutines get to wait in.
type turns struct {
	mu      sync.Mutex
	free    int
	waiting []uint64 // sorted
	wake    chan struct{}
	next    uint64
}

func newTurns(n int) *turns { return &turns{free: n, wake: make(chan struct{})} }

// ticket gives the next place in line, and stands in it: a run that must
// wait for its time first leaves the line (leave) and comes back when
// ready (acquire).
func (t *turns) ticket() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	t.waiting = append(t.waiting, t.next)
	return t.next
}

// leave takes ticket out of the line (it is not ready, or gave up).
func (t *turns) leave(ticket uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.remove(ticket)
	t.broadcast()
}

// acquire waits for ticket's turn and a free slot, or for ctx to end.
func (t *turns) acquire(ctx context.Context, ticket uint64) error {
	t.mu.Lock()
	if i, in := slices.BinarySearch(t.waiting, ticket); !in {
		t.waiting = slices.Insert(t.waiting, i, ticket)
	}
	for t.free == 0 || t.waiting[0] != ticket {
		wake := t.wake
		t.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			t.mu.Lock()
			t.remove(ticket)
			t.broadcast()
			t.mu.Unlock()
			return ctx.Err()
		}
		t.mu.Lock()
	}
	t.remove(ticket)
	t.free--
	t.broadcast() // the next in line may go too, if slots remain
	t.mu.Unlock()
	return nil
}

// release frees a slot.
func (t *turns) release() {
	t.mu.Lock()
	t.free++
	t.broadcast()
	t.mu.Unlock()
}

func (t *turns) remove(ticket uint64) {
	if i, ok := slices.BinarySearch(t.waiting, ticket); ok {
		t.waiting = slices.Delete(t.waiting, i, i+1)
	}
}

// broadcast wakes every waiter; the caller holds mu.
func (t *turns) broadcast() {
	close(t.wake)
	t.wake = make(chan struct{})
}
