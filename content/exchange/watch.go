package exchange

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// Whether the peers this node waits on for blocks are alive.
//
// A peer whose process was stopped, or whose machine froze, keeps its
// connection until QUIC's idle timeout (30 s; a TCP connection, whose
// kernel still answers, longer), and each request to it until Timeout.
// So while requests to a peer are in flight, the peer is watched: one
// that has sent this node not one byte for Quiet (on any protocol: a peer
// still sending, however slowly, is not stalled) is pinged, and one that
// answers no ping within 2×Quiet and sends nothing meanwhile is given up:
// its connection is closed, which fails every request to it at once, and
// GivenUp says so until it is heard from again; unless it is the only
// source (Config.MayGiveUp), whose requests wait for it.

// owed is what this node waits for from a peer.
type owed struct {
	n        int       // requests to it in flight
	since    time.Time // when it was last heard from: a byte, an answer, a first request
	in       int64     // its byte count then
	watching bool      // a watch runs for it
}

// owe counts a request to p in flight until done is called, and watches
// p while any is.
func (s *Service) owe(p peer.ID) (done func()) {
	if s.cfg.BytesIn == nil {
		return func() {}
	}
	s.mu.Lock()
	o := s.owed[p]
	if o == nil {
		o = &owed{}
		s.owed[p] = o
	}
	if o.n == 0 {
		o.since, o.in = time.Now(), s.cfg.BytesIn(p)
	}
	o.n++
	start := !o.watching
	o.watching = true
	s.mu.Unlock()
	if start {
		go s.watch(p)
	}
	return func() {
		s.mu.Lock()
		o.n--
		o.since = time.Now() // an answer, or a failure, came
		s.mu.Unlock()
	}
}

// watch watches p until nothing is owed by it, pinging it when it is
// quiet and giving it up when it does not answer.
func (s *Service) watch(p peer.ID) {
	tick := max(s.cfg.Quiet/5, 50*time.Millisecond)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(tick):
		}
		s.mu.Lock()
		o := s.owed[p]
		if o.n == 0 {
			o.watching = false
			delete(s.owed, p)
			s.mu.Unlock()
			return
		}
		quiet := s.heard(o, p) >= s.cfg.Quiet
		s.mu.Unlock()
		if !quiet {
			continue
		}
		err := s.ping(p, 2*s.cfg.Quiet)
		s.mu.Lock()
		if err == nil {
			o.since = time.Now()
		}
		gone := s.heard(o, p) >= s.cfg.Quiet
		if gone && s.cfg.MayGiveUp != nil && !s.cfg.MayGiveUp(p) {
			gone = false
			o.since = time.Now() // waited for: nowhere else to go
		}
		if gone {
			s.gaveUp[p] = o.in
			s.gaveUpCount[p]++
			o.since = time.Now() // watched afresh: a new connection to it may hang too
		}
		s.mu.Unlock()
		if gone {
			s.log.Warn("peer owes this node blocks, has sent nothing for a while and does not answer a ping; giving it up",
				"peer", p, "quiet", 3*s.cfg.Quiet, "err", err)
			s.HoldOff(p)
			_ = s.h.Network().ClosePeer(p)
		}
	}
}

// heard updates o from p's byte count and says how long ago p was last
// heard from. s.mu is held.
func (s *Service) heard(o *owed, p peer.ID) time.Duration {
	if in := s.cfg.BytesIn(p); in != o.in {
		o.in, o.since = in, time.Now()
	}
	return time.Since(o.since)
}

// GivenUp says whether p was given up for not answering (see watch), and
// has not been heard from since.
func (s *Service) GivenUp(p peer.ID) bool {
	if s.cfg.BytesIn == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.gaveUp[p]
	if ok && s.cfg.BytesIn(p) != in {
		delete(s.gaveUp, p)
		ok = false
	}
	return ok
}

// GaveUp counts the times each peer was given up for not answering.
func (s *Service) GaveUp() map[peer.ID]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.gaveUpCount)
}

// ping waits, at most d, for p to answer a ping. A ping that fails at
// once (a dial backoff, a stream the peer's resource manager refused) is
// sent again every pingAgain: only a peer that answers none within d is
// said not to answer.
func (s *Service) ping(p peer.ID, d time.Duration) error {
	ctx, cancel := context.WithTimeout(s.ctx, d)
	defer cancel()
	var last error
	for {
		r, ok := <-ping.Ping(ctx, s.h, p)
		if ok && r.Error == nil {
			return nil
		}
		if ok {
			last = r.Error
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("no answer to a ping within %s", d), last)
		case <-time.After(pingAgain):
		}
	}
}

// pingAgain is how soon a ping that failed at once is sent again.
const pingAgain = 500 * time.Millisecond
