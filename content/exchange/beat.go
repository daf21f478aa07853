package exchange

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/internal/wire"
)

// How an asker tells a peer that is stuck from one that is waiting.
//
// A peer whose blocks handler hangs (its disk stopped answering, a bug)
// while its process lives on still answers pings and sends gossip: the
// watch (watch.go) sees it alive, and each request to it would wait for
// Timeout. So over Protocol (1.2.0) a node answering a request that has
// to wait before its next block (for its own upstream, its turn on the
// connection, a rate limit) says so with a beat (reply.Wait), as often as
// the asker asked (want.Beat: a quarter of its Config.Stuck). The asker reads with an idle deadline: a request that
// gets nothing for Stuck, neither a byte of its own answer nor of any
// other answer of the peer's to this node (a beat can wait behind a block
// on a slow link), fails with ErrStuck, and its blocks are fetched
// elsewhere, and WasStuck says so for stuckFor. Over the older versions,
// which know no beats, and to a peer there is no other source for
// (Config.MayGiveUp), a request waits for Timeout as before.

// stuckFor is how long WasStuck remembers a peer that was stuck.
const stuckFor = time.Minute

// minBeat bounds how often an asker may have beats sent to it.
const minBeat = 50 * time.Millisecond

// ErrStuck: a peer sent nothing for a request of this node's for
// Config.Stuck, neither blocks nor word that it waits for them.
var ErrStuck = errors.New("peer sent neither blocks nor word that it waits for them")

// A beater writes a beat to an asker's stream while the answer waits
// (every 0: no beats, the asker's version knows none).
type beater struct {
	str   network.Stream
	every time.Duration
}

// wait runs wait, which returns once its ctx ends, writing a beat every
// b.every until it returns. If a beat cannot be written, wait's ctx is
// ended and wait is waited for: its effects (a turn taken) are the
// caller's to undo.
func (b beater) wait(ctx context.Context, wait func(context.Context) error) error {
	if b.every <= 0 {
		return wait(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- wait(ctx) }()
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if err := wire.Write(b.str, reply{Wait: true}); err != nil {
				cancel()
				<-done
				return fmt.Errorf("write a beat: %w", err)
			}
		}
	}
}

// lastHeard is, by peer with requests of this node's over Protocol open,
// when a byte of an answer last came from it (unix nanoseconds), shared by
// those requests' idle readers.
type lastHeard struct {
	at    atomic.Int64
	users int // open requests that read it; s.mu
}

// heardFrom gives the clock of p's answers for a request about to read
// one; done is called when the request ends.
func (s *Service) heardFrom(p peer.ID) (l *lastHeard, done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l = s.answered[p]
	if l == nil {
		l = &lastHeard{}
		s.answered[p] = l
	}
	l.users++
	return l, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if l.users--; l.users == 0 {
			delete(s.answered, p)
		}
	}
}

// An idleReader reads a request's answer, failing with ErrStuck once
// nothing came from the peer for stuck since the request began (start)
// or since its last byte of an answer to this node (last), and with the
// stream's own error at end.
type idleReader struct {
	str   network.Stream
	last  *lastHeard
	start int64 // unix nanoseconds
	stuck time.Duration
	end   time.Time // the request's deadline (zero: none)
}

func (r *idleReader) Read(b []byte) (int, error) {
	for {
		dl := r.heard().Add(r.stuck)
		if !r.end.IsZero() && r.end.Before(dl) {
			dl = r.end
		}
		_ = r.str.SetReadDeadline(dl)
		n, err := r.str.Read(b)
		if n > 0 {
			r.last.at.Store(time.Now().UnixNano())
		}
		var ne net.Error
		if n > 0 || err == nil || !errors.As(err, &ne) || !ne.Timeout() || (!r.end.IsZero() && !time.Now().Before(r.end)) {
			return n, err
		}
		if time.Since(dl) > r.stuck/2 {
			// The deadline passed long before this node saw it: its own
			// process was stopped (the peer's bytes may wait unread in its
			// socket). The peer gets a fresh Stuck from now.
			r.start = time.Now().UnixNano()
			continue
		}
		if time.Since(r.heard()) < r.stuck {
			continue // another answer of the peer's moved meanwhile
		}
		return 0, fmt.Errorf("%w: nothing for %s", ErrStuck, r.stuck)
	}
}

// heard is when the peer was last heard from for this request.
func (r *idleReader) heard() time.Time { return time.Unix(0, max(r.start, r.last.at.Load())) }

// noteStuck records that a request to p failed with ErrStuck (and
// forgets the peers that were stuck longer ago than stuckFor).
func (s *Service) noteStuck(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	maps.DeleteFunc(s.stuck, func(_ peer.ID, at time.Time) bool { return now.Sub(at) >= stuckFor })
	if _, ok := s.stuck[p]; !ok {
		s.log.Warn("peer sent nothing for a request for a while, neither blocks nor word that it waits for them: fetching them elsewhere",
			"peer", p, "stuck", s.cfg.Stuck)
	}
	s.stuck[p] = now
}

// WasStuck says whether a request to p failed with ErrStuck within the
// last stuckFor: its other blocks, and those of its children, are better
// fetched elsewhere for now.
func (s *Service) WasStuck(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.stuck[p]
	if ok && time.Since(at) >= stuckFor {
		delete(s.stuck, p)
		ok = false
	}
	return ok
}
