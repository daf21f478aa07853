// Package swarm tells a node where to fetch a package's blocks besides its
// parent. A managing node keeps, for each package, which of its children
// asked for it, and answers each child with its peers for that package:
// the sibling relays for a relay (each stands for a site, and the uplinks
// of all of them carry the package), the children at the same site for a
// client (their LAN is cheap, the site's uplink is not).
//
// Each block then has one owner among a node and its peers, in even
// shares of the package's bytes (Shares), or, for the share of a peer
// that failed, by rendezvous hashing (Owner): the owner fetches the block
// from its parent and the others fetch it from the owner, which pulls it
// through when it does not hold it yet. So a package crosses the parent's
// link about once whatever the number of children, and the children's
// links share the rest.
//
// A child that asks again while it fetches says what it still waits for
// from each of its peers, and hears what the others said: together, what
// each peer's uplink has left to send, so that at the end a child takes
// from the parent the blocks of the peer whose uplink would finish last.
//
// The same protocol tells a child its ancestors above its parent (address
// included), so that a client whose relay is down can fall back to its
// grandparent, then the root.
package swarm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
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

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// Protocol asks the parent for this node's peers for a package; in this
// version the asker says what it waits for from its peers and hears what
// the others do (request.Waits, response.OthersWait).
const Protocol protocol.ID = "/swdist/peers/1.1.0"

// ProtocolV1 is the version before Waits: served to children that do not
// speak Protocol yet, and spoken to a parent that does not.
const ProtocolV1 protocol.ID = "/swdist/peers/1.0.0"

const (
	maxMsg    = 64 << 10
	maxAddrs  = 8 // addresses passed on per peer
	maxAncest = 16
)

type request struct {
	Root []byte `cbor:"0,keyasint,omitempty"` // empty: only the ancestors
	// Waits is, for each of the asker's peers, the bytes of the package
	// it still waits for from that peer (asked for or not).
	Waits []due `cbor:"1,keyasint,omitempty"`
}

// A due is bytes of a package that peer ID is still to send.
type due struct {
	ID    []byte `cbor:"0,keyasint"`
	Bytes uint64 `cbor:"1,keyasint"`
}

type info struct {
	ID    []byte   `cbor:"0,keyasint"`
	Addrs [][]byte `cbor:"1,keyasint,omitempty"`
}

type response struct {
	Peers     []info `cbor:"0,keyasint,omitempty"`
	Ancestors []info `cbor:"1,keyasint,omitempty"` // the parent's parent first, the root last
	// OthersWait is, for each of the peers, what the asker's other peers
	// last said they wait for from it: with the asker's own, what is
	// left for the peer's uplink to send.
	OthersWait []due `cbor:"2,keyasint,omitempty"`
}

// Config configures a Service.
type Config struct {
	Member *member.Service
	Parent peer.ID // empty on the root
	// ParentAddrs are where the parent listens (passed on to children as
	// their grandparent's addresses).
	ParentAddrs []ma.Multiaddr
	// MaxPeers bounds the peers given for one package (default 16): the
	// first children to ask, so that all of them see the same set.
	MaxPeers int
	// TTL is how long a child counts as fetching a package after it last
	// asked (default 1 hour).
	TTL time.Duration
	// Gather is how long the first child to ask for a package waits for
	// its answer, so that the children that start with it are in it
	// (default 300ms). The wait ends sooner once every connected child
	// alike to it has asked.
	Gather time.Duration
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxPeers == 0 {
		c.MaxPeers = 16
	}
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	if c.Gather == 0 {
		c.Gather = 300 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Service answers children and asks the parent.
type Service struct {
	h   host.Host
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	fetchers  map[string][]asked   // by root CID, in the order they asked
	first     map[string]time.Time // when the first of them asked, by root CID
	gathered  map[gatherKey]*gathering
	ancestors []peer.AddrInfo // above the parent, learnt from it
}

type asked struct {
	peer  member.Peer
	at    time.Time
	waits map[peer.ID]uint64 // as it last said (see request.Waits)
}

// waitsFor is how long a child's Waits count after it said them: it asks
// again every half second or so while it fetches.
const waitsFor = 3 * time.Second

// New makes a Service; Start serves the protocol.
func New(h host.Host, cfg Config) *Service {
	cfg.setDefaults()
	return &Service{h: h, cfg: cfg, log: cfg.Logger.With("svc", "swarm"), fetchers: map[string][]asked{}, first: map[string]time.Time{}, gathered: map[gatherKey]*gathering{}}
}

// Start serves the protocol to this node's children.
func (s *Service) Start() {
	serve := s.cfg.Member.Guard(func(pr member.Peer, str network.Stream) {
		v1 := str.Protocol() == ProtocolV1 // knows no Waits, and takes no OthersWait
		_ = wire.Serve(str, maxMsg, func(req request) (response, error) {
			if pr.Cert.Parent != s.h.ID() {
				return response{}, fmt.Errorf("%s is not a child of this node", pr.ID)
			}
			resp := response{Ancestors: s.ancestorsForChildren()}
			if len(req.Root) == 0 {
				return resp, nil
			}
			root, err := cid.Cast(req.Root)
			if err != nil {
				return response{}, fmt.Errorf("bad package CID: %w", err)
			}
			// Those that ask within Gather of the first (they got the same
			// manifest) wait until it has passed and all get the same
			// peers, so that they agree on who fetches which block from
			// the start.
			wait, all := s.register(root, pr, decodeDues(req.Waits))
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-all:
				t.Stop()
			}
			peers := s.peersFor(root, pr)
			for _, p := range peers {
				resp.Peers = append(resp.Peers, s.infoOf(p))
			}
			if !v1 {
				resp.OthersWait = s.othersWait(root, pr, peers)
			}
			return resp, nil
		})
	})
	s.h.SetStreamHandler(Protocol, serve)
	s.h.SetStreamHandler(ProtocolV1, serve)
}

// Close stops serving.
func (s *Service) Close() {
	s.h.RemoveStreamHandler(Protocol)
	s.h.RemoveStreamHandler(ProtocolV1)
}

// register notes that child pr fetches root, and says how long to wait for
// the others that start with it: until Gather after the first asked, or
// until all closes, once every connected child alike to pr has asked.
func (s *Service) register(root cid.Cid, pr member.Peer, waits map[peer.ID]uint64) (wait time.Duration, all <-chan struct{}) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, list := range s.fetchers {
		if list = slices.DeleteFunc(list, func(a asked) bool { return now.Sub(a.at) > s.cfg.TTL }); len(list) == 0 {
			delete(s.fetchers, k)
			delete(s.first, k)
			for g := range s.gathered {
				if g.root == k {
					delete(s.gathered, g)
				}
			}
		} else {
			s.fetchers[k] = list
		}
	}
	key := root.KeyString()
	list := s.fetchers[key]
	if i := slices.IndexFunc(list, func(a asked) bool { return a.peer.ID == pr.ID }); i >= 0 {
		list[i].at, list[i].waits = now, s.keepPeers(waits, list, pr)
	} else {
		list = append(list, asked{peer: pr, at: now, waits: s.keepPeers(waits, list, pr)})
		s.fetchers[key] = list
		if len(list) == 1 {
			s.first[key] = now
		}
	}
	g := gatherKey{key, kinOf(pr.Cert)}
	gt, ok := s.gathered[g]
	if !ok {
		gt = &gathering{all: make(chan struct{})}
		s.gathered[g] = gt
	}
	if !gt.closed && s.allAsked(list, pr.Cert) {
		close(gt.all)
		gt.closed = true
	}
	return s.first[key].Add(s.cfg.Gather).Sub(now), gt.all
}

// allAsked says whether every connected child alike to one with
// certificate c is in list.
func (s *Service) allAsked(list []asked, c cert.Cert) bool {
	in := make(map[peer.ID]bool, len(list))
	for _, a := range list {
		in[a.peer.ID] = true
	}
	for _, p := range s.cfg.Member.Peers() {
		if p.Cert.Parent == s.h.ID() && alike(p.Cert, c) && !in[p.ID] {
			return false
		}
	}
	return true
}

// A gathering is the children of one kin asking for one package: all
// closes once every connected one of them has asked.
type gathering struct {
	all    chan struct{}
	closed bool
}

type gatherKey struct {
	root string // CID key
	kin  kin
}

// A kin is a group of children that are peers for blocks: relays with
// relays, clients with clients at the same site.
type kin struct {
	role cert.Role
	site string // "" for relays
}

func kinOf(c cert.Cert) kin {
	if c.Role == cert.RoleRelay {
		return kin{role: c.Role}
	}
	return kin{role: c.Role, site: c.Site}
}

// peersFor are child pr's peers for root: the first MaxPeers alike
// children to ask that are still connected.
func (s *Service) peersFor(root cid.Cid, pr member.Peer) []peer.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []peer.ID
	for _, a := range s.fetchers[root.KeyString()] {
		if len(out) == s.cfg.MaxPeers {
			break
		}
		if a.peer.ID == pr.ID || !alike(a.peer.Cert, pr.Cert) {
			continue
		}
		if _, ok := s.cfg.Member.Peer(a.peer.ID); ok {
			out = append(out, a.peer.ID)
		}
	}
	return out
}

// othersWait sums, for each of peers, what the children alike to pr other
// than pr said in the last waitsFor that they wait for from it.
func (s *Service) othersWait(root cid.Cid, pr member.Peer, peers []peer.ID) []due {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := map[peer.ID]uint64{}
	for _, a := range s.fetchers[root.KeyString()] {
		if a.peer.ID == pr.ID || !alike(a.peer.Cert, pr.Cert) || time.Since(a.at) > waitsFor {
			continue
		}
		for p, b := range a.waits {
			sum[p] = addSat(sum[p], b)
		}
	}
	var out []due
	for _, p := range peers {
		if b := sum[p]; b > 0 {
			out = append(out, due{ID: []byte(p), Bytes: b})
		}
	}
	return out
}

// keepPeers is what the parent keeps of child pr's waits: those for the
// first MaxPeers children alike to it that fetch the package too (its
// peers, as peersFor gives them), so that what a child can make it hold
// is bounded.
func (s *Service) keepPeers(waits map[peer.ID]uint64, fetchers []asked, pr member.Peer) map[peer.ID]uint64 {
	out := map[peer.ID]uint64{}
	for _, a := range fetchers {
		if len(out) >= s.cfg.MaxPeers {
			break
		}
		if b, ok := waits[a.peer.ID]; ok && a.peer.ID != pr.ID && alike(a.peer.Cert, pr.Cert) {
			out[a.peer.ID] = b
		}
	}
	return out
}

// addSat adds without wrapping around (the numbers come from children).
func addSat(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

func encodeDues(m map[peer.ID]uint64) []due {
	var out []due
	for p, b := range m {
		out = append(out, due{ID: []byte(p), Bytes: b})
	}
	slices.SortFunc(out, func(a, b due) int { return bytes.Compare(a.ID, b.ID) })
	return out
}

func decodeDues(list []due) map[peer.ID]uint64 {
	m := map[peer.ID]uint64{}
	for _, d := range list {
		if id, err := peer.IDFromBytes(d.ID); err == nil {
			m[id] = d.Bytes
		}
	}
	return m
}

// alike says whether two children are peers for blocks: of one kin.
func alike(a, b cert.Cert) bool { return kinOf(a) == kinOf(b) }

func (s *Service) infoOf(p peer.ID) info {
	i := info{ID: []byte(p)}
	for _, a := range s.h.Peerstore().Addrs(p) {
		if len(i.Addrs) == maxAddrs {
			break
		}
		i.Addrs = append(i.Addrs, a.Bytes())
	}
	return i
}

// ancestorsForChildren is the parent of this node and its ancestors.
func (s *Service) ancestorsForChildren() []info {
	if s.cfg.Parent == "" {
		return nil
	}
	out := []info{s.infoOf(s.cfg.Parent)}
	if len(out[0].Addrs) == 0 {
		for _, a := range s.cfg.ParentAddrs {
			out[0].Addrs = append(out[0].Addrs, a.Bytes())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.ancestors {
		if len(out) == maxAncest {
			break
		}
		i := info{ID: []byte(a.ID)}
		for _, m := range a.Addrs {
			i.Addrs = append(i.Addrs, m.Bytes())
		}
		out = append(out, i)
	}
	return out
}

// Swarm is what the parent says of a package being fetched.
type Swarm struct {
	Peers []peer.ID // this node's peers for it
	// OthersWait is, by peer, the bytes of it that this node's other
	// peers wait for from that one, as they last told the parent (none
	// from a parent that does not sum them).
	OthersWait map[peer.ID]uint64
}

// Peers asks the parent for this node's peers for the package root, and
// registers this node as fetching it; waits, if any, are the bytes this
// node still waits for from each of its peers. The peers' addresses go
// into the peerstore.
func (s *Service) Peers(ctx context.Context, root cid.Cid, waits map[peer.ID]uint64) (Swarm, error) {
	resp, err := s.ask(ctx, request{Root: root.Bytes(), Waits: encodeDues(waits)})
	if err != nil {
		return Swarm{}, err
	}
	out := Swarm{OthersWait: decodeDues(resp.OthersWait)}
	for _, ai := range decode(resp.Peers) {
		if ai.ID == s.h.ID() || ai.ID == s.cfg.Parent {
			continue
		}
		s.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		out.Peers = append(out.Peers, ai.ID)
	}
	return out, nil
}

// LearnAncestors asks the parent who is above it.
func (s *Service) LearnAncestors(ctx context.Context) error {
	_, err := s.ask(ctx, request{})
	return err
}

// Ancestors are the nodes above the parent, nearest first, as the parent
// last said.
func (s *Service) Ancestors() []peer.AddrInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ancestors)
}

func (s *Service) ask(ctx context.Context, req request) (response, error) {
	if s.cfg.Parent == "" {
		return response{}, nil
	}
	str, err := s.h.NewStream(ctx, s.cfg.Parent, Protocol, ProtocolV1)
	if err != nil {
		return response{}, fmt.Errorf("ask parent %s for peers: %w", s.cfg.Parent, err)
	}
	if str.Protocol() == ProtocolV1 {
		req.Waits = nil // a parent of the version before rejects the field
	}
	resp, err := wire.Call[request, response](str, req, maxMsg)
	if err != nil {
		return response{}, fmt.Errorf("ask parent %s for peers: %w", s.cfg.Parent, err)
	}
	anc := decode(resp.Ancestors)
	s.mu.Lock()
	s.ancestors = anc
	s.mu.Unlock()
	return resp, nil
}

func decode(list []info) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, i := range list {
		id, err := peer.IDFromBytes(i.ID)
		if err != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, b := range i.Addrs {
			if a, err := ma.NewMultiaddrBytes(b); err == nil {
				ai.Addrs = append(ai.Addrs, a)
			}
		}
		out = append(out, ai)
	}
	return out
}

// Shares gives each of a package's blocks (in the package's order, with
// their sizes) an owner among self and peers, the same at every node with
// the same peers, so that each owner's share has about the same bytes and
// no uplink carries more than its share. Each block, in turn, goes to the
// one with the fewest bytes so far (the lowest ID on a tie); the last
// blocks (tailShare of them, at most maxTail) largest first, then moved or
// swapped between the fullest share and the emptiest while that brings
// them closer. In turns alone the shares would end up to a block apart (a
// chunk can be four times its target size), and each share crosses its
// owner's uplink once per peer. Blocks not in the list have no owner here
// (see Owner).
func Shares(blocks []cid.Cid, sizes []uint64, self peer.ID, peers []peer.ID) map[string]peer.ID {
	members := append([]peer.ID{self}, peers...)
	slices.Sort(members)
	members = slices.Compact(members)
	load := make([]uint64, len(members))
	owner := make([]int, len(blocks)) // by block, its owner's index in members
	give := func(i int) {
		least := 0
		for j := range members {
			if load[j] < load[least] {
				least = j
			}
		}
		load[least] += sizes[i]
		owner[i] = least
	}
	head := len(blocks) - min(int(float64(len(blocks))*tailShare), maxTail)
	for i := range head {
		give(i)
	}
	var tail []int
	for i := head; i < len(blocks); i++ {
		tail = append(tail, i)
	}
	slices.SortStableFunc(tail, func(a, b int) int { return cmp.Compare(sizes[b], sizes[a]) })
	for _, i := range tail {
		give(i)
	}
	for range tail {
		if !evenOut(tail, sizes, owner, load) {
			break
		}
	}
	out := make(map[string]peer.ID, len(blocks))
	for i, c := range blocks {
		out[c.KeyString()] = members[owner[i]]
	}
	return out
}

// How many of a package's last blocks Shares may move to even the shares out.
const (
	tailShare = 0.125
	maxTail   = 256
)

// evenOut moves one block of tail from the fullest share to the emptiest,
// or swaps one of each, whichever brings the two closest, and says whether
// it did (not if nothing brings them closer).
func evenOut(tail []int, sizes []uint64, owner []int, load []uint64) bool {
	hi, lo := 0, 0
	for j := range load {
		if load[j] > load[hi] {
			hi = j
		}
		if load[j] < load[lo] {
			lo = j
		}
	}
	gap := load[hi] - load[lo]
	best, a, b := gap, -1, -1 // b -1: a moves alone
	for _, i := range tail {
		if owner[i] != hi {
			continue
		}
		// Moving d bytes from hi to lo leaves them |gap - 2d| apart.
		try := func(d uint64, k int) {
			if d >= gap {
				return
			}
			g := gap - 2*d
			if 2*d > gap {
				g = 2*d - gap
			}
			if g < best {
				best, a, b = g, i, k
			}
		}
		try(sizes[i], -1)
		for _, k := range tail {
			if owner[k] == lo && sizes[k] < sizes[i] {
				try(sizes[i]-sizes[k], k)
			}
		}
	}
	if a < 0 {
		return false
	}
	owner[a], load[hi], load[lo] = lo, load[hi]-sizes[a], load[lo]+sizes[a]
	if b >= 0 {
		owner[b], load[lo], load[hi] = hi, load[lo]-sizes[b], load[hi]+sizes[b]
	}
	return true
}

// Owner is the one among self and peers that fetches block c from its
// parent (highest random weight): every node with the same set picks the
// same owner, and a peer that joins or leaves moves only its share.
func Owner(c cid.Cid, self peer.ID, peers []peer.ID) peer.ID {
	best, bestW := self, weight(c, self)
	for _, p := range peers {
		if w := weight(c, p); w > bestW || (w == bestW && p < best) {
			best, bestW = p, w
		}
	}
	return best
}

func weight(c cid.Cid, p peer.ID) uint64 {
	h := sha256.New()
	h.Write([]byte(p))
	h.Write(c.Bytes())
	return binary.BigEndian.Uint64(h.Sum(nil))
}
