package exchange

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// How even fairShare keeps the peers across the uplink.
const (
	fairSlack   = 256 << 10              // bytes a peer may be ahead of the least-served one that also has a block ready
	fairMaxWait = 200 * time.Millisecond // how long a block waits for the others at most
	fairStalled = 2 * time.Second        // a peer whose block has been going out this long holds no one back
)

// fairShare paces the blocks a node sends across its uplink so that the
// peers at other sites that each have a block ready get about the same
// bytes: a block for a peer more than fairSlack ahead of another waits
// (at most fairMaxWait) until that one's block went out. A peer whose
// block has been going out for fairStalled (it reads slowly or not at
// all) holds no one back until that block is out. Left to the
// transport, each connection's congestion control takes its own part
// of a full uplink, and one sibling relay could get an owner's share at
// twice the pace of another for many seconds; that one then ends late,
// while the others' uplinks have nothing more to send it.
type fairShare struct {
	mu     sync.Mutex
	sent   map[peer.ID]int64     // bytes sent since the peers were last all idle
	ready  map[peer.ID]time.Time // a block is waiting or being written, since
	change chan struct{}         // closed when a block went out
}

func newFairShare() *fairShare {
	return &fairShare{sent: map[peer.ID]int64{}, ready: map[peer.ID]time.Time{}, change: make(chan struct{})}
}

// least is the fewest bytes sent to a ready peer other than p, of those
// not stalled.
func (f *fairShare) least(p peer.ID) (int64, bool) {
	var m int64
	found := false
	for q, since := range f.ready {
		if q != p && time.Since(since) < fairStalled && (!found || f.sent[q] < m) {
			m, found = f.sent[q], true
		}
	}
	return m, found
}

// wait returns once p's next block may go; done, called after it went
// out, records its n bytes. One block per peer at a time (its turn).
func (f *fairShare) wait(ctx context.Context, p peer.ID) (done func(n int), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.least(p); ok && f.sent[p] < m {
		f.sent[p] = m // back after a pause: not owed what it did not ask for
	}
	f.ready[p] = time.Now()
	done = func(n int) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.sent[p] += int64(n)
		f.leave(p)
	}
	give := time.NewTimer(fairMaxWait)
	defer give.Stop()
	for {
		if m, ok := f.least(p); !ok || f.sent[p] <= m+fairSlack {
			return done, nil
		}
		change := f.change
		f.mu.Unlock()
		select {
		case <-change:
		case <-give.C:
			f.mu.Lock()
			return done, nil
		case <-ctx.Done():
			f.mu.Lock()
			f.leave(p)
			return nil, ctx.Err()
		}
		f.mu.Lock()
	}
}

// leave marks p not ready, and wakes the others; f.mu is held.
func (f *fairShare) leave(p peer.ID) {
	delete(f.ready, p)
	if len(f.ready) == 0 {
		clear(f.sent)
	}
	close(f.change)
	f.change = make(chan struct{})
}
