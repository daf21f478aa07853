package node

import (
	"context"
	"sync"
)

// upSlots bounds the requests in flight to the parent. Waiters for others
// (a sibling relay, a child) go before this node's own fetch: what the
// parent sends first is then what someone is waiting for, to be passed on
// as it arrives, and this node's own blocks come in the meantime.
type upSlots struct {
	mu        sync.Mutex
	free      int
	high, low []chan struct{}
}

func newUpSlots(n int) *upSlots { return &upSlots{free: n} }

// acquire takes a slot, waiting its turn: high says the request is for
// others.
func (s *upSlots) acquire(ctx context.Context, high bool) error {
	s.mu.Lock()
	if s.free > 0 && len(s.high) == 0 && (high || len(s.low) == 0) {
		s.free--
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	if high {
		s.high = append(s.high, ch)
	} else {
		s.low = append(s.low, ch)
	}
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-ch: // granted meanwhile: pass it on
			s.releaseLocked()
		default:
			s.high = removeCh(s.high, ch)
			s.low = removeCh(s.low, ch)
		}
		return ctx.Err()
	}
}

func (s *upSlots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *upSlots) releaseLocked() {
	switch {
	case len(s.high) > 0:
		close(s.high[0])
		s.high = s.high[1:]
	case len(s.low) > 0:
		close(s.low[0])
		s.low = s.low[1:]
	default:
		s.free++
	}
}

func removeCh(list []chan struct{}, ch chan struct{}) []chan struct{} {
	for i, c := range list {
		if c == ch {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}
