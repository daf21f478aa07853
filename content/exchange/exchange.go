// Package exchange moves blocks between members of the tree over the
// protocol /swdist/blocks/1.2.0: a node asks a peer for a list of CIDs and
// gets each block or "missing" back; every block is checked against its CID
// before it is stored. A relay that is asked for blocks it does not hold
// fetches them from its own parent first (pull-through), so that a package
// crosses each link about once, whoever asks first. A parent that sent a
// block across its link to one of a group of children (Config.Kin) points
// another of them that asks for it to that one (reply.At) rather than send
// it again, unless the asker insists (want.Force). A node whose answer
// has to wait says so now and then (beat.go), so that an asker can tell a
// peer that is stuck from one that is waiting.
package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/ratelimit"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// Protocol asks a peer for blocks; in this version an answer that waits
// says so (reply.Wait, see beat.go).
const Protocol protocol.ID = "/swdist/blocks/1.2.0"

// ProtocolV11 is the version before beats, in which a parent may point the
// asker to a sibling for some blocks (reply.At) and the asker may insist
// (want.Force). Like ProtocolV1, it is served to peers that do not speak
// Protocol yet, and spoken to a peer that does not.
const ProtocolV11 protocol.ID = "/swdist/blocks/1.1.0"

// ProtocolV1 is the version before redirects (never pointed elsewhere).
const ProtocolV1 protocol.ID = "/swdist/blocks/1.0.0"

// protocols are the versions this node asks in, the newest first.
var protocols = []protocol.ID{Protocol, ProtocolV11, ProtocolV1}

// Protocols are the versions of the protocol this package serves, the
// newest first.
func Protocols() []protocol.ID { return slices.Clone(protocols) }

// Limits of one request.
const (
	MaxWant      = 64        // CIDs per request
	maxBlock     = 1<<20 + 1 // a block frame: a chunk, or part of a root
	maxWantBytes = MaxWant * 80
	streams      = 4 // requests in flight to one peer
	maxAtAddrs   = 8 // addresses given with a sibling pointed to
	// A sibling pointed to is asked for at most Timeout/holderShare, and
	// one that failed is not asked again for holderHoldOff: its blocks
	// come from the parent meanwhile.
	holderShare   = 4
	holderHoldOff = time.Minute
	// pointedWait is how long a node asked for blocks as the sibling its
	// parent pointed to waits for those it lacks to arrive (they may be
	// on their way from that parent) before it answers "missing".
	pointedWait = 2 * time.Second
	// What a parent remembers of the blocks it sent to a group of
	// children: for sentFor, and sentMax blocks at most (a root serving
	// 64 GiB of distinct packages within the hour); past that it sends
	// again rather than remember more.
	sentFor = time.Hour
	sentMax = 1 << 18
)

type want struct {
	CIDs [][]byte `cbor:"0,keyasint"`
	// Force asks for the blocks themselves, even those a sibling of the
	// asker got from this node (Protocol only): the asker takes them from
	// here on purpose, or the sibling failed it.
	Force bool `cbor:"1,keyasint,omitempty"`
	// Pointed says the asker's parent pointed it here (Protocol only):
	// blocks this node lacks are answered "missing" after pointedWait,
	// not fetched from its own parent (the asker's), which would send them
	// across its link anyway and then once more across this node's.
	Pointed bool `cbor:"2,keyasint,omitempty"`
	// Beat is how often, in milliseconds, an answer that waits is to say
	// so (Protocol only; 0: never; see beat.go): a quarter of how long the
	// asker waits for a peer that sends nothing.
	Beat int64 `cbor:"3,keyasint,omitempty"`
}

type reply struct {
	CID     []byte `cbor:"0,keyasint"`
	Data    []byte `cbor:"1,keyasint,omitempty"`
	Missing bool   `cbor:"2,keyasint,omitempty"`
	// At is the peer, a sibling of the asker, that this node sent the
	// block to: the asker is to take it from there (Protocol only), at
	// the addresses AtAddrs (a few of those this node knows).
	At      []byte   `cbor:"3,keyasint,omitempty"`
	AtAddrs [][]byte `cbor:"4,keyasint,omitempty"`
	// Wait, with no CID, is a beat (Protocol only): the answer waits for
	// its next block (see beat.go).
	Wait bool `cbor:"5,keyasint,omitempty"`
}

// ErrBadBlock: a peer sent a block that did not match its CID. The block
// was dropped; the peer should not be asked again.
var ErrBadBlock = errors.New("a block that did not match its CID")

// Config configures a Service.
type Config struct {
	Member *member.Service
	Store  *blocks.Store
	// Upstream, if set, fetches blocks this node does not hold before it
	// answers for them.
	// from is the peer that asked.
	Upstream func(ctx context.Context, from member.Peer, cids []cid.Cid) error
	// FetchLimit, if set, gives the limiter that paces blocks fetched from
	// a peer (nil: not paced), such as the parent across a WAN link.
	FetchLimit func(p peer.ID) *ratelimit.Limiter
	// ServeLimit, if set, gives the limiter that paces blocks served to a
	// peer (nil: not paced), such as a node below a child that falls back
	// to this node while its own relay is down.
	ServeLimit func(pr member.Peer) *ratelimit.Limiter
	// Remote, if set, says whether blocks sent to a peer cross this
	// node's uplink (it is at another site): those are paced by
	// fairShare.
	Remote func(pr member.Peer) bool
	// Kin, if set, names the group of children a peer is in whose members
	// take from each other the blocks this node sent one of them ("" for
	// none): another that asks for such a block is pointed to the first
	// (reply.At), while that one is connected, rather than sent it again.
	Kin func(pr member.Peer) string
	// Timeout bounds one request, pull-through included (default 2
	// minutes): a peer that stalls longer is given up for those blocks.
	Timeout time.Duration
	// Stuck (default 30 s; at least 200 ms, as peers beat at most every
	// 50 ms) is how long a request over Protocol reads with nothing from
	// the peer, on any of its answers to this node: one whose blocks
	// handler hangs (see beat.go). It asks the peers it fetches from to
	// beat every Stuck/4 while their answers wait.
	Stuck time.Duration
	// Stalled says whether this node's disk stopped answering: a read or
	// write of a block has been under way for longer than d (nil:
	// Store.Stalled). Its answers then beat no more, and their askers go
	// elsewhere.
	Stalled func(d time.Duration) bool
	// BytesIn, if set, is all that this node has received from a peer,
	// on any protocol: while requests to a peer are in flight, one that
	// sends nothing for Quiet (default 5 s) and answers no ping within
	// twice that is given up (see watch.go). libp2p's bandwidth counter
	// updates its meters once a second: Quiet must be some seconds.
	BytesIn func(peer.ID) int64
	Quiet   time.Duration
	// MayGiveUp, if set, says whether a peer that stopped answering may be
	// given up, or a request to it failed as stuck: not one there is no
	// other source for (a relay's parent when it has no ancestor to fall
	// back to), whose requests had better wait for it.
	MayGiveUp func(peer.ID) bool
	Logger    *slog.Logger
}

// Service serves and fetches blocks.
type Service struct {
	h   host.Host
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	bad    map[peer.ID]int   // blocks that did not match their CID, by peer
	served map[peer.ID]int   // blocks sent, by peer
	turns  map[peer.ID]*turn // whose turn it is to write a block to a peer
	fair   *fairShare        // of the uplink, among peers at other sites
	sent   map[string]sentTo // by CID key: the first of a kin this node sent the block to
	pruned time.Time         // when sent was last rid of what is past sentFor
	// pointers counts the blocks this node pointed askers elsewhere for.
	pointers int
	// failedHolder: when a sibling this node was pointed to last failed it.
	failedHolder map[peer.ID]time.Time
	owed         map[peer.ID]*owed      // peers with requests in flight (watch.go)
	gaveUp       map[peer.ID]int64      // peers given up, with their byte counts then
	gaveUpCount  map[peer.ID]int        // times each was given up
	answered     map[peer.ID]*lastHeard // see beat.go
	made         time.Time              // the start of clock
	stuck        map[peer.ID]time.Time  // when a request to a peer last failed with ErrStuck

	ctx  context.Context // ends with Close
	stop context.CancelFunc
}

// A sentTo is the peer, of kin, that a block went to, and when.
type sentTo struct {
	peer peer.ID
	kin  string
	at   time.Time
}

// counts says whether st still names a holder of the block for kin.
func (st sentTo) counts(kin string, now time.Time) bool {
	return st.kin == kin && now.Sub(st.at) < sentFor
}

// A turn lets one of the streams that serve a peer write a block at a
// time, in the order they came to it (a channel's waiting senders are let
// through first come, first served). Written all at once, a peer's
// requests would share its link and each block would arrive only when
// all in flight did: a relay could pass none on to its siblings and
// children until then.
type turn struct {
	ch   chan struct{}
	refs int // streams holding or waiting for it
}

// New makes a Service; Start serves the protocol.
func New(h host.Host, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Quiet == 0 {
		cfg.Quiet = 5 * time.Second
	}
	if cfg.Stuck == 0 {
		cfg.Stuck = 30 * time.Second
	}
	cfg.Stuck = max(cfg.Stuck, 4*minBeat)
	if cfg.Stalled == nil && cfg.Store != nil {
		cfg.Stalled = cfg.Store.Stalled
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Service{h: h, cfg: cfg, log: cfg.Logger.With("svc", "blocks"), bad: map[peer.ID]int{}, served: map[peer.ID]int{},
		turns: map[peer.ID]*turn{}, fair: newFairShare(), sent: map[string]sentTo{}, failedHolder: map[peer.ID]time.Time{},
		owed: map[peer.ID]*owed{}, gaveUp: map[peer.ID]int64{}, gaveUpCount: map[peer.ID]int{}, answered: map[peer.ID]*lastHeard{},
		stuck: map[peer.ID]time.Time{}, made: time.Now(), ctx: ctx, stop: stop}
}

// Start serves the protocol to verified members.
func (s *Service) Start() {
	serve := s.cfg.Member.Guard(func(pr member.Peer, str network.Stream) {
		defer str.Close()
		_ = str.SetDeadline(time.Now().Add(s.cfg.Timeout))
		var w want
		if err := wire.Read(str, maxWantBytes, &w); err != nil || len(w.CIDs) > MaxWant {
			_ = str.Reset()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		defer cancel()
		ids := make([]cid.Cid, 0, len(w.CIDs))
		for _, b := range w.CIDs {
			c, err := cid.Cast(b)
			if err != nil {
				_ = str.Reset()
				return
			}
			ids = append(ids, c)
		}
		v12 := str.Protocol() == Protocol
		v11 := v12 || str.Protocol() == ProtocolV11
		bt := &beater{str: str, last: time.Now(), stalled: s.cfg.Stalled}
		if v12 && w.Beat > 0 {
			bt.every = max(time.Duration(w.Beat)*time.Millisecond, minBeat)
		}
		// Blocks a sibling of the asker got from here: it is pointed there,
		// at once (a few bytes each: not in the turn of the blocks).
		if v11 && !w.Force {
			var pointed []pointer
			ids, pointed = s.pointElsewhere(pr, ids)
			for _, pt := range pointed {
				if err := wire.Write(str, reply{CID: pt.c.Bytes(), At: []byte(pt.h), AtAddrs: s.addrsOf(pt.h)}); err != nil {
					_ = str.Reset()
					return
				}
				bt.wrote()
			}
		}
		pointedTo := v11 && w.Pointed
		var absent []cid.Cid
		if s.cfg.Upstream != nil && !pointedTo {
			for _, c := range ids {
				if ok, _ := s.cfg.Store.Has(ctx, c); !ok {
					absent = append(absent, c)
				}
			}
		}
		// Blocks this node lacks are pulled through from upstream in the
		// background; each block goes out as soon as it is here, in the
		// order they come, so that the asker's link is busy while the rest
		// arrive.
		upDone := make(chan struct{})
		if len(absent) > 0 {
			go func() {
				defer close(upDone)
				// Once every block asked for has gone out, the answer is
				// done and ctx with it: what the pull-through still waited
				// for came another way.
				if err := s.cfg.Upstream(ctx, pr, absent); err != nil && ctx.Err() == nil {
					s.log.Debug("pull blocks through from upstream", "for", pr.ID, "n", len(absent), "err", err)
				}
			}()
		} else if pointedTo {
			// What is not here within pointedWait is "missing": the asker
			// takes it from the parent that pointed it here.
			t := time.AfterFunc(pointedWait, func() { close(upDone) })
			defer t.Stop()
		} else {
			close(upDone)
		}
		var lim *ratelimit.Limiter
		if s.cfg.ServeLimit != nil {
			lim = s.cfg.ServeLimit(pr)
		}
		remote := s.cfg.Remote != nil && s.cfg.Remote(pr)
		arrived, stop := s.cfg.Store.Notify(ids)
		defer stop()
		pending := ids
		for len(pending) > 0 {
			finished := isClosed(upDone)
			rest := pending[:0:0]
			for _, c := range pending {
				data, err := s.cfg.Store.Get(ctx, c)
				if errors.Is(err, blocks.ErrNotFound) && !finished {
					rest = append(rest, c) // on its way, maybe
					continue
				}
				r := reply{CID: c.Bytes(), Data: data}
				if err != nil {
					r = reply{CID: c.Bytes(), Missing: true}
					if !errors.Is(err, blocks.ErrNotFound) {
						s.log.Error("serve block", "cid", c, "err", err)
					}
				}
				if lim != nil {
					if err := bt.wait(ctx, func(ctx context.Context) error { return lim.Wait(ctx, len(r.Data)) }); err != nil {
						_ = str.Reset()
						return
					}
				}
				if err := s.write(ctx, str, pr.ID, r, remote, bt); err != nil {
					_ = str.Reset()
					return
				}
				if !r.Missing {
					s.noteSent(pr, r.CID)
				}
			}
			pending = rest
			if len(pending) == 0 {
				break
			}
			err := bt.wait(ctx, func(ctx context.Context) error {
				select {
				case <-arrived:
				case <-upDone:
				case <-ctx.Done():
					return ctx.Err()
				}
				return nil
			})
			if err != nil {
				_ = str.Reset()
				return
			}
		}
	})
	for _, p := range protocols {
		s.h.SetStreamHandler(p, serve)
	}
}

// A pointer is a block asked for, c, and the sibling of the asker to
// take it from, h.
type pointer struct {
	c cid.Cid
	h peer.ID
}

// pointElsewhere splits ids, asked for by pr, into those to send and those
// to point pr elsewhere for: sent to another connected peer of pr's kin.
func (s *Service) pointElsewhere(pr member.Peer, ids []cid.Cid) (send []cid.Cid, pointed []pointer) {
	if s.cfg.Kin == nil {
		return ids, nil
	}
	kin := s.cfg.Kin(pr)
	if kin == "" {
		return ids, nil
	}
	holder := make([]peer.ID, len(ids))
	now := time.Now()
	s.mu.Lock()
	for i, c := range ids {
		if st, ok := s.sent[c.KeyString()]; ok && st.counts(kin, now) && st.peer != pr.ID {
			holder[i] = st.peer
		}
	}
	s.mu.Unlock()
	up := map[peer.ID]bool{}
	for i, c := range ids {
		h := holder[i]
		if h != "" {
			if _, seen := up[h]; !seen {
				_, up[h] = s.cfg.Member.Peer(h)
			}
		}
		if h == "" || !up[h] {
			send = append(send, c)
			continue
		}
		pointed = append(pointed, pointer{c, h})
	}
	if len(pointed) > 0 {
		s.mu.Lock()
		s.pointers += len(pointed)
		s.mu.Unlock()
	}
	return send, pointed
}

// addrsOf are a few addresses of peer h to give an asker pointed to it:
// those of this node's connections to it first (where it is reachable
// from here), then what the peerstore knows.
func (s *Service) addrsOf(h peer.ID) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	add := func(a ma.Multiaddr) {
		if k := string(a.Bytes()); !seen[k] && len(out) < maxAtAddrs {
			seen[k] = true
			out = append(out, a.Bytes())
		}
	}
	for _, c := range s.h.Network().ConnsToPeer(h) {
		add(c.RemoteMultiaddr())
	}
	for _, a := range s.h.Peerstore().Addrs(h) {
		add(a)
	}
	return out
}

// noteSent remembers that block c (its CID's bytes) went to pr, if pr is
// of a kin and the block went to none of it before.
func (s *Service) noteSent(pr member.Peer, c []byte) {
	if s.cfg.Kin == nil {
		return
	}
	kin := s.cfg.Kin(pr)
	if kin == "" {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.pruned) > sentFor/60 { // a walk of it a minute at most, full or not
		s.pruned = now
		maps.DeleteFunc(s.sent, func(_ string, st sentTo) bool { return now.Sub(st.at) >= sentFor })
	}
	k := string(c)
	if st, ok := s.sent[k]; ok && st.counts(kin, now) {
		return
	}
	if len(s.sent) < sentMax {
		s.sent[k] = sentTo{peer: pr.ID, kin: kin, at: now}
	}
}

// write sends r to p on str in its turn (and, across the uplink, at its
// fair share of it), counting a block sent.
func (s *Service) write(ctx context.Context, str network.Stream, p peer.ID, r reply, remote bool, bt *beater) error {
	var release func()
	err := bt.wait(ctx, func(ctx context.Context) (err error) {
		release, err = s.takeTurn(ctx, p)
		return err
	})
	if release != nil {
		defer release()
	}
	if err != nil {
		return err
	}
	var done func(n int)
	if remote && !r.Missing {
		if done, err = s.fair.wait(ctx, p); err != nil {
			return err
		}
	}
	err = wire.Write(str, r)
	bt.wrote()
	if done != nil {
		sent := 0
		if err == nil {
			sent = len(r.Data)
		}
		done(sent)
	}
	if err != nil {
		return err
	}
	if !r.Missing {
		s.mu.Lock()
		s.served[p]++
		s.mu.Unlock()
	}
	return nil
}

// takeTurn waits for the turn to write to p; release gives it to the
// next stream waiting.
func (s *Service) takeTurn(ctx context.Context, p peer.ID) (release func(), err error) {
	s.mu.Lock()
	t := s.turns[p]
	if t == nil {
		t = &turn{ch: make(chan struct{}, 1)}
		s.turns[p] = t
	}
	t.refs++
	s.mu.Unlock()
	leave := func() {
		s.mu.Lock()
		if t.refs--; t.refs == 0 {
			delete(s.turns, p)
		}
		s.mu.Unlock()
	}
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Close stops serving.
func (s *Service) Close() {
	for _, p := range protocols {
		s.h.RemoveStreamHandler(p)
	}
	s.stop()
}

// BadBlocks counts the blocks each peer sent that did not match their CID.
func (s *Service) BadBlocks() map[peer.ID]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.bad)
}

// Served counts the blocks this node sent, by peer.
func (s *Service) Served() map[peer.ID]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.served)
}

// Fetch gets the blocks cids from p into the store, in the order given
// (callers that share a package's blocks among peers take them in the
// package's order, the same at all of them), several requests at a time,
// checking each. It returns the CIDs p did not deliver. Blocks p points
// elsewhere for (p is this node's parent, and sent them to a sibling of
// this node) are taken from that sibling, and from p after all where the
// sibling fails.
func (s *Service) Fetch(ctx context.Context, p peer.ID, cids []cid.Cid) ([]cid.Cid, error) {
	missing, at, err := s.fetchFrom(ctx, p, cids, false, false)
	if len(at) == 0 {
		return missing, err
	}
	missing = slices.DeleteFunc(missing, func(c cid.Cid) bool { _, ok := at[c.KeyString()]; return ok })
	byHolder := map[peer.ID][]cid.Cid{}
	for _, c := range cids {
		if h, ok := at[c.KeyString()]; ok {
			byHolder[h] = append(byHolder[h], c)
		}
	}
	var again []cid.Cid
	for h, list := range byHolder {
		if !s.holderOK(h) {
			again = append(again, list...)
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout/holderShare)
		asked := time.Now()
		left, _, herr := s.fetchFrom(hctx, h, list, false, true)
		if herr != nil && len(left) > 0 && time.Since(asked) < time.Second && !errors.Is(herr, ErrBadBlock) && !errors.Is(herr, ErrStuck) && !s.GivenUp(h) {
			// A connection that died under this node fails the first
			// requests on it at once: the sibling closed it, as when it
			// gave this node up while this node's process was stopped.
			// Once more, on a new one.
			left, _, herr = s.fetchFrom(hctx, h, left, false, true)
		}
		cancel()
		if herr != nil || len(left) > 0 {
			s.HoldOff(h)
			s.log.Debug("the sibling the parent pointed to failed: its blocks come from the parent after all", "parent", p, "sibling", h, "n", len(left), "err", herr)
		}
		again = append(again, left...)
	}
	if len(again) == 0 {
		return missing, err
	}
	left, _, ferr := s.fetchFrom(ctx, p, again, true, false)
	return append(missing, left...), errors.Join(err, ferr)
}

// holderOK says whether sibling h may be asked for blocks its parent
// pointed to it for: not one that sent a bad block, nor, for
// holderHoldOff, one that failed a request.
func (s *Service) holderOK(h peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bad[h] > 0 {
		return false
	}
	if t, ok := s.failedHolder[h]; ok {
		if time.Since(t) < holderHoldOff {
			return false
		}
		delete(s.failedHolder, h)
	}
	return true
}

// HoldOff keeps Fetch from following its parent's pointers to sibling h
// for holderHoldOff: h failed a request, or its caller gave up on it (it
// stopped answering); those blocks come from the parent instead.
func (s *Service) HoldOff(h peer.ID) {
	s.mu.Lock()
	s.failedHolder[h] = time.Now()
	s.mu.Unlock()
}

// FetchForce is Fetch without being pointed elsewhere: for blocks this
// node takes from p on purpose rather than from the peer that has them.
func (s *Service) FetchForce(ctx context.Context, p peer.ID, cids []cid.Cid) ([]cid.Cid, error) {
	missing, _, err := s.fetchFrom(ctx, p, cids, true, false)
	return missing, err
}

// fetchFrom gets cids from p, several requests at a time (want.Force and
// want.Pointed as force and pointed say): it returns the CIDs p did not
// deliver, and among them those p pointed elsewhere for, by CID key, with
// the peer it pointed to.
func (s *Service) fetchFrom(ctx context.Context, p peer.ID, cids []cid.Cid, force, pointed bool) ([]cid.Cid, map[string]peer.ID, error) {
	var (
		mu      sync.Mutex
		missing []cid.Cid
		at      map[string]peer.ID
		errs    []error
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, streams)
	for i := 0; i < len(cids); i += MaxWant {
		group := cids[i:min(i+MaxWant, len(cids))]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return append(missing, cids[i:]...), at, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			got, there, err := s.fetchGroup(ctx, p, group, force, pointed)
			mu.Lock()
			defer mu.Unlock()
			for _, c := range group {
				if !got[c.KeyString()] {
					missing = append(missing, c)
				}
			}
			for k, h := range there {
				if at == nil {
					at = map[string]peer.ID{}
				}
				at[k] = h
			}
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	return missing, at, errors.Join(errs...)
}

func (s *Service) fetchGroup(ctx context.Context, p peer.ID, group []cid.Cid, force, pointed bool) (got map[string]bool, at map[string]peer.ID, err error) {
	got = map[string]bool{}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	str, err := s.h.NewStream(ctx, p, protocols...)
	if err != nil {
		return got, nil, fmt.Errorf("ask %s for blocks: %w", p, err)
	}
	defer s.owe(p)()
	// A request that failed is reset, not just closed: the peer would go
	// on writing blocks nobody reads, and its other answers to this node
	// wait for their turn behind them. (Reads do not watch ctx: blocks
	// already on their way when a caller stops waiting, as a pull-through
	// whose answer came another way, are still read and kept; the stream's
	// deadline bounds that. Resetting those instead had the server send
	// them again: 1.12× in the WAN benchmark.)
	defer func() {
		if err != nil {
			_ = str.Reset()
		} else {
			_ = str.Close()
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = str.SetDeadline(dl)
	}
	v12 := str.Protocol() == Protocol
	v11 := v12 || str.Protocol() == ProtocolV11
	var rd io.Reader = str
	w := want{CIDs: make([][]byte, len(group)), Force: force && v11, Pointed: pointed && v11}
	var last *lastHeard // of a request watched (see beat.go)
	if v12 && (s.cfg.MayGiveUp == nil || s.cfg.MayGiveUp(p)) {
		var done func()
		last, done = s.heardFrom(p)
		defer done()
		ir := watchIdle(str, last, s.clock, s.cfg.Stuck)
		defer ir.close()
		rd = ir
		w.Beat = (s.cfg.Stuck / 4).Milliseconds()
	}
	wanted := map[string]bool{}
	for i, c := range group {
		w.CIDs[i] = c.Bytes()
		wanted[c.KeyString()] = true
	}
	if err := wire.Write(str, w); err != nil {
		return got, nil, fmt.Errorf("ask %s for blocks: %w", p, err)
	}
	var lim *ratelimit.Limiter
	if s.cfg.FetchLimit != nil {
		lim = s.cfg.FetchLimit(p)
	}
	bad, beats := 0, 0
	for answered := 0; answered < len(group); {
		var r reply
		if err := wire.Read(rd, maxBlock+1024, &r); err != nil {
			if errors.Is(err, ErrStuck) {
				s.noteStuck(p)
			}
			return got, at, fmt.Errorf("blocks from %s: %w", p, err)
		}
		if r.Wait && v12 && r.CID == nil {
			// A beat: the peer waits for the next block. At most one per
			// minBeat of the request's time.
			if beats++; beats > int(s.cfg.Timeout/minBeat) {
				s.penalise(p)
				return got, at, fmt.Errorf("blocks from %s: %d beats, more than a request's time has room for", p, beats)
			}
			continue
		}
		answered++
		c, err := cid.Cast(r.CID)
		if err != nil || !wanted[c.KeyString()] {
			s.penalise(p)
			return got, at, fmt.Errorf("blocks from %s: a block that was not asked for", p)
		}
		if r.Missing {
			continue
		}
		if r.At != nil {
			// Pointed to a sibling: taken from there if it is another
			// peer, else as missing.
			if h, err := peer.IDFromBytes(r.At); err == nil && h != p && h != s.h.ID() && v11 {
				if at == nil {
					at = map[string]peer.ID{}
				}
				at[c.KeyString()] = h
				for _, b := range r.AtAddrs {
					if a, err := ma.NewMultiaddrBytes(b); err == nil {
						s.h.Peerstore().AddAddr(h, a, peerstore.TempAddrTTL)
					}
				}
			}
			continue
		}
		// Pacing what is read paces the sender too: the stream's window
		// fills and it waits.
		idle := last.busy() // this node's own waits between reads
		werr := lim.Wait(ctx, len(r.Data))
		var perr error
		if werr == nil {
			perr = s.cfg.Store.Put(ctx, c, r.Data)
		}
		idle()
		if werr != nil {
			return got, at, fmt.Errorf("blocks from %s: %w", p, werr)
		}
		if err := perr; err != nil {
			if errors.Is(err, blocks.ErrCorrupt) {
				s.penalise(p)
				s.log.Warn("dropped a bad block", "from", p, "cid", c)
				bad++
				continue
			}
			return got, at, err
		}
		got[c.KeyString()] = true
	}
	if bad > 0 {
		return got, at, fmt.Errorf("blocks from %s: %d of %d: %w", p, bad, len(group), ErrBadBlock)
	}
	return got, at, nil
}

func (s *Service) penalise(p peer.ID) {
	s.mu.Lock()
	s.bad[p]++
	s.mu.Unlock()
}
