package exchange

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
// the asker asked (want.Beat: a quarter of its Config.Stuck), while its
// disk answers (Config.Stalled).
//
// The asker watches each such request while it reads its answer (not
// while it waits on its own rate limit or disk): one that gets nothing
// for Stuck, no byte of any answer of the peer's to this node (a beat can
// wait behind another answer's block on a slow link), fails with
// ErrStuck. Its blocks are fetched elsewhere, and WasStuck says so for
// stuckFor. So one answer stuck beside others of the same peer that go
// on, or wait and beat, ends at Timeout, as a pull-through whose own
// upstream hangs does (it beats while it waits). Over the older versions,
// which know no beats, and to a peer there is no other source for
// (Config.MayGiveUp), a request waits for Timeout as before.

// stuckFor is how long WasStuck remembers a peer that was stuck.
const stuckFor = time.Minute

// minBeat bounds how often an asker may have beats sent to it.
const minBeat = 50 * time.Millisecond

// ErrStuck: a peer sent nothing for a request of this node's for
// Config.Stuck, neither blocks nor word that it waits for them.
var ErrStuck = errors.New("peer sent neither blocks nor word that it waits for them")

// A beater writes a beat to an asker's stream whenever the answer has
// written nothing for every (0: no beats, the asker's version knows none),
// unless this node's disk has stalled for 2×every: an answer waiting on a
// disk that stopped answering (a pull-through whose blocks cannot be
// stored) is stuck, not waiting.
type beater struct {
	str     network.Stream
	every   time.Duration
	last    time.Time // of the last write to str
	stalled func(d time.Duration) bool
}

// wrote notes a write to the asker.
func (b *beater) wrote() { b.last = time.Now() }

// wait runs wait, which returns once its ctx ends, writing a beat each
// time the answer has written nothing for b.every, until it returns. If a
// beat cannot be written, wait's ctx is ended and wait is waited for: its
// effects (a turn taken) are the caller's to undo.
func (b *beater) wait(ctx context.Context, wait func(context.Context) error) error {
	if b.every <= 0 {
		return wait(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- wait(ctx) }()
	t := time.NewTimer(max(b.every-time.Since(b.last), 0))
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if b.stalled != nil && b.stalled(2*b.every) {
				t.Reset(b.every)
				continue
			}
			if err := wire.Write(b.str, reply{Wait: true}); err != nil {
				cancel()
				<-done
				return fmt.Errorf("write a beat: %w", err)
			}
			b.wrote()
			t.Reset(b.every)
		}
	}
}

// lastHeard is, by peer with requests of this node's over Protocol open,
// when a byte of an answer last came from it (on the Service's clock),
// shared by those requests' idle readers.
type lastHeard struct {
	at atomic.Int64
	// waits counts this node's own waits between reads of the peer's
	// answers (its rate limit, its disk). Over QUIC, what those leave
	// unread fills the connection's window, and the peer's other answers
	// cannot come, beats included, until they end: the peer is not
	// silent meanwhile, this node is slow.
	waits atomic.Int64
	// stuck is when (clock) a request's watchdog found the peer stuck,
	// 0 if none did. The others reading from it fail too while nothing
	// came since: what the peer sends them comes on the same connection,
	// and no byte of it came for Stuck.
	stuck atomic.Int64
	users int // open requests that read it; s.mu
}

// busy marks one of this node's waits between reads of the peer's answers
// until the returned func is called (a nil l: a request not watched).
func (l *lastHeard) busy() (end func()) {
	if l == nil {
		return func() {}
	}
	l.waits.Add(1)
	return func() { l.waits.Add(-1) }
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

// clock is the time since the Service was made, on the monotonic clock
// (a step of the wall clock moves no deadline): nanoseconds, at least 1.
func (s *Service) clock() int64 { return int64(time.Since(s.made)) + 1 }

// An idleReader reads a request's answer while a watchdog checks, every
// stuck/4, how long its reads have waited with nothing from the peer: once
// that is stuck, the read under way is ended (its deadline set to now) and
// fails with ErrStuck, and so do the reads of the node's other requests
// to the peer (lastHeard.stuck). Time the asker spends between reads of
// any answer of the peer's (its own rate limit, its disk: lastHeard.waits)
// does not count.
type idleReader struct {
	str     network.Stream
	peer    *lastHeard
	clock   func() int64
	stuck   time.Duration
	reading atomic.Int64 // when the read under way began (clock), 0 if none
	isStuck atomic.Bool
	done    chan struct{}
}

// watchIdle starts the watchdog of a request's reads of str; close stops it.
func watchIdle(str network.Stream, peer *lastHeard, clock func() int64, stuck time.Duration) *idleReader {
	r := &idleReader{str: str, peer: peer, clock: clock, stuck: stuck, done: make(chan struct{})}
	go r.watch()
	return r
}

func (r *idleReader) close() { close(r.done) }

func (r *idleReader) Read(b []byte) (int, error) {
	r.reading.Store(r.clock())
	n, err := r.str.Read(b)
	if n > 0 {
		r.peer.at.Store(r.clock())
	}
	r.reading.Store(0)
	if err != nil && r.isStuck.Load() {
		return n, fmt.Errorf("%w: nothing for %s", ErrStuck, r.stuck)
	}
	return n, err
}

func (r *idleReader) watch() {
	every := r.stuck / 4
	t := time.NewTicker(every)
	defer t.Stop()
	last := r.clock()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		now := r.clock()
		if time.Duration(now-last) > 2*every {
			// This check came late: this node's process was stopped (the
			// peer's bytes may wait unread in its socket). The read under
			// way gets a fresh stuck from now.
			if v := r.reading.Load(); v != 0 {
				r.reading.CompareAndSwap(v, now)
			}
			last = now
			continue
		}
		last = now
		if r.peer.waits.Load() > 0 {
			r.peer.at.Store(now) // this node holds the answers up
			continue
		}
		since, heard := r.reading.Load(), r.peer.at.Load()
		// Another request found the peer stuck, and nothing came since.
		at := r.peer.stuck.Load()
		found := at != 0 && heard < at
		if since == 0 || (!found && time.Duration(now-max(since, heard)) < r.stuck) {
			continue
		}
		r.peer.stuck.Store(now)
		r.isStuck.Store(true)
		_ = r.str.SetReadDeadline(time.Now())
		return
	}
}

// noteStuck records that a request to p failed with ErrStuck (and
// forgets the peers that were stuck longer ago than stuckFor), and holds
// p off as a sibling to be pointed to (HoldOff).
func (s *Service) noteStuck(p peer.ID) {
	s.mu.Lock()
	now := time.Now()
	maps.DeleteFunc(s.stuck, func(_ peer.ID, at time.Time) bool { return now.Sub(at) >= stuckFor })
	if _, ok := s.stuck[p]; !ok {
		s.log.Warn("peer sent nothing for a request for a while, neither blocks nor word that it waits for them: fetching them elsewhere",
			"peer", p, "stuck", s.cfg.Stuck)
	}
	s.stuck[p] = now
	s.mu.Unlock()
	s.HoldOff(p)
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
