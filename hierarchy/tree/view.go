package tree

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/sync/singleflight"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// Protocol answers a parent's request for this node's subtree; since
// 1.1.0 the request says how long the parent waits for the answer
// (viewReq.Wait). ProtocolV1 is the version before, still answered.
const (
	Protocol   protocol.ID = "/swdist/tree/1.1.0"
	ProtocolV1 protocol.ID = "/swdist/tree/1.0.0"
)

// maxView bounds a subtree answer: 16 MiB is about 60,000 nodes.
const maxView = 16 << 20

// Node is one node of a tree view, with its children nested.
type Node struct {
	PeerID        string    `json:"peer_id"`
	Role          string    `json:"role"`
	Site          string    `json:"site"`
	Groups        []string  `json:"groups,omitempty"`
	Addrs         []string  `json:"addrs"`
	Online        bool      `json:"online"`
	LastSeen      time.Time `json:"last_seen"`
	ChildrenCount int       `json:"children_count"`
	Children      []Node    `json:"children"`
	// Error says why a relay did not answer for its subtree now: the
	// subtree is missing from the view, or shown as last seen (Stale).
	Error string `json:"error,omitempty"`
	// Stale: the relay did not answer now (offline, an error, or not
	// within the viewer's Fresh), and its subtree is shown as it answered
	// last: every node below it offline, but for a relay that is only
	// slow (connected, no answer within Fresh), whose last answer of
	// less than lastFresh ago is shown as it was.
	Stale bool `json:"stale,omitempty"`
}

// CountOnline counts the nodes of the view that are online, n included.
func (n Node) CountOnline() int {
	c := 0
	if n.Online {
		c++
	}
	for _, k := range n.Children {
		c += k.CountOnline()
	}
	return c
}

// flatNode is a Node on the wire: a list with parent indexes keeps the
// decoder's nesting bound small however deep the tree.
type flatNode struct {
	Up            int      `cbor:"0,keyasint"` // index of the parent, -1 for the top
	PeerID        string   `cbor:"1,keyasint"`
	Role          string   `cbor:"2,keyasint"`
	Site          string   `cbor:"3,keyasint"`
	Groups        []string `cbor:"4,keyasint,omitempty"`
	Addrs         []string `cbor:"5,keyasint,omitempty"`
	Online        bool     `cbor:"6,keyasint"`
	LastSeen      int64    `cbor:"7,keyasint"`
	ChildrenCount int      `cbor:"8,keyasint"`
	Error         string   `cbor:"9,keyasint,omitempty"`
}

func flatten(n Node) []flatNode {
	var out []flatNode
	var walk func(n Node, up int)
	walk = func(n Node, up int) {
		i := len(out)
		out = append(out, flatNode{Up: up, PeerID: n.PeerID, Role: n.Role, Site: n.Site, Groups: n.Groups,
			Addrs: n.Addrs, Online: n.Online, LastSeen: n.LastSeen.Unix(), ChildrenCount: n.ChildrenCount, Error: n.Error})
		for _, c := range n.Children {
			walk(c, i)
		}
	}
	walk(n, -1)
	return out
}

func unflatten(list []flatNode) (Node, error) {
	if len(list) == 0 || list[0].Up != -1 {
		return Node{}, errors.New("empty tree view")
	}
	kids := make([][]int, len(list))
	for i, f := range list[1:] {
		if f.Up < 0 || f.Up > i {
			return Node{}, fmt.Errorf("tree view entry %d has parent %d", i+1, f.Up)
		}
		kids[f.Up] = append(kids[f.Up], i+1)
	}
	var build func(i int) Node
	build = func(i int) Node {
		f := list[i]
		n := Node{PeerID: f.PeerID, Role: f.Role, Site: f.Site, Groups: f.Groups, Addrs: f.Addrs, Online: f.Online,
			LastSeen: time.Unix(f.LastSeen, 0).UTC(), ChildrenCount: f.ChildrenCount, Error: f.Error, Children: []Node{}}
		for _, k := range kids[i] {
			n.Children = append(n.Children, build(k))
		}
		// A relay that did not answer, with its subtree listed: as last
		// seen (the wire does not carry Stale; older nodes refuse fields
		// they do not know).
		n.Stale = n.Error != "" && len(n.Children) > 0
		return n
	}
	return build(0), nil
}

type viewReq struct {
	Depth int `cbor:"0,keyasint"`
	// Wait is how long the asker waits for the answer, in milliseconds
	// (Protocol only; 0 over ProtocolV1, whose nodes refuse the field):
	// the answering relay waits half of it for its own child relays, so
	// that a stall deep down is shown at its own level.
	Wait int64 `cbor:"1,keyasint,omitempty"`
}

type viewResp struct {
	Nodes []flatNode `cbor:"0,keyasint"`
}

// ViewConfig configures a Viewer.
type ViewConfig struct {
	Member   *member.Service
	Registry *Registry
	// Self returns this node's own certificate.
	Self func() cert.Cert
	// Timeout bounds the question to each child relay.
	Timeout time.Duration
	// Fresh is how long a view waits for a child relay whose subtree it
	// has seen before (default 2 s; in the answer to a parent, half of
	// what the parent said it waits, or of Fresh); one that is slower, or
	// stalled (connected, yet not answering), is shown as it answered
	// last, and the question goes on within Timeout for the next view.
	Fresh  time.Duration
	Logger *slog.Logger
}

// Viewer builds tree views of this node's subtree and answers its parent's
// tree requests.
type Viewer struct {
	h   host.Host
	cfg ViewConfig
	log *slog.Logger

	mu   sync.Mutex
	last map[peer.ID]answer // each child relay's whole subtree, as it last answered
	asks singleflight.Group
}

// An answer is a child relay's subtree, and when it gave it.
type answer struct {
	sub Node
	at  time.Time
}

// NewViewer makes a Viewer; Start registers its protocol.
func NewViewer(h host.Host, cfg ViewConfig) *Viewer {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Fresh == 0 {
		cfg.Fresh = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Viewer{h: h, cfg: cfg, log: cfg.Logger.With("svc", "tree"), last: map[peer.ID]answer{}}
}

// Start registers the tree protocol; only this node's parent may ask.
func (v *Viewer) Start() {
	serve := v.cfg.Member.Guard(func(pr member.Peer, s network.Stream) {
		self := v.cfg.Self()
		if pr.ID != self.Parent {
			v.log.Warn("tree request from a peer that is not the parent", "peer", pr.ID)
			_ = s.Reset()
			return
		}
		_ = wire.Serve(s, 1024, func(req viewReq) (viewResp, error) {
			ctx, cancel := context.WithTimeout(context.Background(), v.cfg.Timeout)
			defer cancel()
			wait := v.cfg.Fresh / 2
			if req.Wait > 0 {
				wait = max(time.Duration(req.Wait)*time.Millisecond/2, minWait)
			}
			return viewResp{Nodes: flatten(v.view(ctx, req.Depth, wait))}, nil
		})
	})
	v.h.SetStreamHandler(Protocol, serve)
	v.h.SetStreamHandler(ProtocolV1, serve)
}

// minWait is the least a relay waits for its child relays when it answers
// its parent.
const minWait = 20 * time.Millisecond

// Close removes the protocol.
func (v *Viewer) Close() {
	v.h.RemoveStreamHandler(Protocol)
	v.h.RemoveStreamHandler(ProtocolV1)
}

// View returns this node's subtree down to depth levels below it (negative:
// all). Child relays that are online are asked for their own subtrees in
// parallel; one that does not answer is shown with an error.
func (v *Viewer) View(ctx context.Context, depth int) Node { return v.view(ctx, depth, v.cfg.Fresh) }

// view is View waiting fresh for a child relay seen before (askFresh).
func (v *Viewer) view(ctx context.Context, depth int, fresh time.Duration) Node {
	self := v.cfg.Self()
	top := Node{PeerID: self.PeerID.String(), Role: string(self.Role), Site: self.Site, Groups: self.Groups,
		Addrs: addrStrings(v.h.Addrs()), Online: true, LastSeen: time.Now().UTC().Truncate(time.Second), Children: []Node{}}
	children := v.cfg.Registry.List()
	for _, c := range children {
		if !c.Revoked {
			top.ChildrenCount++
		}
	}
	if depth == 0 {
		return top
	}
	top.Children = make([]Node, 0, top.ChildrenCount)
	for _, c := range children {
		if c.Revoked {
			continue
		}
		n := Node{PeerID: c.PeerID.String(), Role: string(c.Role), Site: c.Site, Groups: c.Groups, Addrs: c.Addrs,
			Online: c.Online, LastSeen: c.LastSeen.UTC().Truncate(time.Second), Children: []Node{}}
		if c.Online {
			n.LastSeen = top.LastSeen
			if live := v.h.Peerstore().Addrs(c.PeerID); len(live) > 0 {
				n.Addrs = addrStrings(live)
			}
		}
		top.Children = append(top.Children, n)
	}
	// Ask the online relays for their subtrees; each goroutine owns one
	// element of the finished slice.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range top.Children {
		child := &top.Children[i]
		if child.Role != string(cert.RoleRelay) {
			continue
		}
		p, err := peer.Decode(child.PeerID)
		if err != nil {
			continue
		}
		if !child.Online {
			v.lastSeen(child, p, depth-1, false)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sub, err := v.askFresh(ctx, p, depth-1, fresh)
			if err != nil {
				child.Error = err.Error()
				v.lastSeen(child, p, depth-1, errors.Is(err, errSlow))
				return
			}
			sub.Online, sub.LastSeen = true, top.LastSeen
			*child = sub
		}()
	}
	wg.Wait()
	return top
}

// lastSeen fills in the subtree of child relay p, which did not answer, as
// it last answered, down to depth levels, every node below it offline: the
// machines there still exist, and their jobs still count. For a relay
// that is only slow, an answer of less than lastFresh ago is shown as it
// was, and the child's Error says how old.
func (v *Viewer) lastSeen(child *Node, p peer.ID, depth int, slow bool) {
	v.mu.Lock()
	a, ok := v.last[p]
	sub, at := a.sub, a.at
	v.mu.Unlock()
	if !ok || depth == 0 {
		return
	}
	keep := slow && time.Since(at) < lastFresh
	if keep {
		child.Error += fmt.Sprintf("; shown as it answered %s ago", time.Since(at).Round(time.Second))
	}
	var offline func(n Node, depth int) Node
	offline = func(n Node, depth int) Node {
		out := n
		out.Online = out.Online && keep
		out.Children = []Node{}
		if depth != 0 {
			for _, c := range n.Children {
				out.Children = append(out.Children, offline(c, depth-1))
			}
		}
		return out
	}
	child.Children = offline(sub, depth).Children
	child.ChildrenCount = sub.ChildrenCount
	child.Stale = true
}

// askFresh asks child relay p for its subtree down to depth, waiting for
// the answer at most fresh if this viewer has seen that subtree before
// (View then shows it as it was), else within Timeout. The question
// itself is bounded by Timeout, not by ctx: one that goes on after its
// caller stopped waiting keeps its answer for the next view. The same
// question to the same relay is asked once at a time, however many views
// wait for it (each status query asks for one).
func (v *Viewer) askFresh(ctx context.Context, p peer.ID, depth int, fresh time.Duration) (Node, error) {
	v.mu.Lock()
	_, seen := v.last[p]
	v.mu.Unlock()
	wait := v.cfg.Timeout
	if seen {
		wait = fresh
	}
	ch := v.asks.DoChan(p.String()+"/"+strconv.Itoa(depth), func() (any, error) {
		actx, cancel := context.WithTimeout(context.Background(), v.cfg.Timeout)
		defer cancel()
		sub, err := v.ask(actx, p, depth, wait)
		if err == nil && depth < 0 {
			v.mu.Lock()
			v.last[p] = answer{sub, time.Now()}
			v.mu.Unlock()
		}
		return sub, err
	})
	var late <-chan time.Time
	if seen {
		t := time.NewTimer(fresh)
		defer t.Stop()
		late = t.C
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return Node{}, r.Err
		}
		return r.Val.(Node), nil
	case <-late:
		return Node{}, fmt.Errorf("ask %s for its subtree: %w within %s", p, errSlow, fresh)
	case <-ctx.Done():
		return Node{}, fmt.Errorf("ask %s for its subtree: %w", p, ctx.Err())
	}
}

// errSlow: a child relay that is connected did not answer within the
// view's wait.
var errSlow = errors.New("no answer")

// lastFresh is how old the last answer of a relay that is only slow may be
// to be shown as it was, not every node offline.
const lastFresh = time.Minute

// ask asks child relay p for its subtree down to depth, saying (over
// Protocol) that this node waits wait for it.
func (v *Viewer) ask(ctx context.Context, p peer.ID, depth int, wait time.Duration) (Node, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	s, err := v.h.NewStream(network.WithNoDial(ctx, "only ask connected children"), p, Protocol, ProtocolV1)
	if err != nil {
		return Node{}, fmt.Errorf("ask %s for its subtree: %w", p, err)
	}
	req := viewReq{Depth: depth}
	if s.Protocol() == Protocol {
		req.Wait = max(wait.Milliseconds(), 1)
	}
	resp, err := wire.Call[viewReq, viewResp](s, req, maxView)
	if err != nil {
		return Node{}, fmt.Errorf("ask %s for its subtree: %w", p, err)
	}
	return unflatten(resp.Nodes)
}
