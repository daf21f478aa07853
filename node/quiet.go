package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// quietPeers watches the peers a fetch waits on for blocks. A peer that
// has requests in flight and has sent this node not one byte for quiet
// (on any protocol: a peer still sending, however slowly, is not stalled)
// is due a ping. The bytes are libp2p's counts of stream payload read,
// which its meters update once a second: quiet must be some seconds. Without this, a peer whose process stopped or whose
// machine froze holds its share until QUIC's idle timeout (30 s) or the
// block timeout (2 minutes) ends its requests.
type quietPeers struct {
	quiet   time.Duration
	bytesIn func(peer.ID) int64 // all bytes received from a peer so far
	since   map[peer.ID]time.Time
	in      map[peer.ID]int64 // bytesIn at since
	probing map[peer.ID]bool
	gone    map[peer.ID]bool // given up: not watched again
}

func newQuietPeers(quiet time.Duration, bytesIn func(peer.ID) int64) *quietPeers {
	return &quietPeers{quiet: quiet, bytesIn: bytesIn, since: map[peer.ID]time.Time{}, in: map[peer.ID]int64{}, probing: map[peer.ID]bool{}, gone: map[peer.ID]bool{}}
}

// due returns the peers to ping now (marked as being probed until probed
// is called): those with requests in flight (inflight, "" for upstream,
// which is not watched here) and nothing from them for quiet.
func (q *quietPeers) due(inflight map[peer.ID]int, now time.Time) []peer.ID {
	var out []peer.ID
	for p, n := range inflight {
		if p == "" || q.gone[p] {
			continue
		}
		if n == 0 {
			delete(q.since, p)
			continue
		}
		in := q.bytesIn(p)
		if t, ok := q.since[p]; !ok || in != q.in[p] {
			q.since[p], q.in[p] = now, in
			continue
		} else if q.probing[p] || now.Sub(t) < q.quiet {
			continue
		}
		q.probing[p] = true
		out = append(out, p)
	}
	return out
}

// answered notes that a request to p ended: p is alive now.
func (q *quietPeers) answered(p peer.ID, now time.Time) {
	if _, ok := q.since[p]; ok {
		q.since[p] = now
	}
}

// probed takes the outcome of the ping due returned p for, and says
// whether p is to be given up: it did not answer, and sent nothing in the
// meantime either. A peer given up is not watched again.
func (q *quietPeers) probed(p peer.ID, answered bool, now time.Time) (giveUp bool) {
	delete(q.probing, p)
	if in := q.bytesIn(p); answered || in != q.in[p] {
		q.since[p], q.in[p] = now, in
		return false
	}
	q.gone[p] = true
	return true
}

// ping waits, at most d, for p to answer a ping. A ping that fails at
// once (a dial backoff, a stream the peer's resource manager refused) is
// sent again every pingAgain: only a peer that answers none within d is
// said not to answer.
func (n *Node) ping(ctx context.Context, p peer.ID, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for {
		r, ok := <-ping.Ping(ctx, n.host, p)
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

// bytesFrom is all that this node received from p since it started.
func (n *Node) bytesFrom(p peer.ID) int64 { return n.bw.GetBandwidthForPeer(p).TotalIn }
