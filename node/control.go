package node

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
)

var _ api.Backend = (*Node)(nil)

// ID implements api.Backend.
func (n *Node) ID(context.Context) (api.ID, error) {
	c := n.Cert()
	end, _ := n.Chain().NotAfter()
	id := api.ID{PeerID: c.PeerID.String(), Role: string(c.Role), Site: c.Site, Groups: nonNil(c.Groups),
		Addrs: addrStrings(n.host.Addrs()), Org: c.Org.String(), CertNotAfter: end, Version: Version}
	if c.Parent != "" {
		id.Parent = c.Parent.String()
	}
	return id, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// Peers implements api.Backend: the connected, verified peers.
func (n *Node) Peers(context.Context) ([]api.Peer, error) {
	out := []api.Peer{}
	for _, pr := range n.member.Peers() {
		rel := "peer"
		switch {
		case pr.ID == n.parent:
			rel = "parent"
		case pr.Cert.Parent == n.host.ID():
			rel = "child"
		}
		var addrs []string
		for _, c := range n.host.Network().ConnsToPeer(pr.ID) {
			addrs = append(addrs, c.RemoteMultiaddr().String())
		}
		out = append(out, api.Peer{PeerID: pr.ID.String(), Role: string(pr.Cert.Role), Site: pr.Cert.Site,
			Relation: rel, Addrs: nonNil(addrs), Since: pr.Since.UTC().Truncate(time.Second)})
	}
	order := map[string]int{"parent": 0, "child": 1, "peer": 2}
	slices.SortFunc(out, func(a, b api.Peer) int {
		if a.Relation != b.Relation {
			return order[a.Relation] - order[b.Relation]
		}
		return strings.Compare(a.PeerID, b.PeerID)
	})
	return out, nil
}

// Tree implements api.Backend.
func (n *Node) Tree(ctx context.Context, depth int) (tree.Node, error) {
	return n.viewer.View(ctx, depth), nil
}

// find looks for p in this node's subtree.
func (n *Node) find(ctx context.Context, p peer.ID) (tree.Node, bool) {
	var walk func(t tree.Node) (tree.Node, bool)
	walk = func(t tree.Node) (tree.Node, bool) {
		if t.PeerID == p.String() {
			return t, true
		}
		for _, c := range t.Children {
			if f, ok := walk(c); ok {
				return f, true
			}
		}
		return tree.Node{}, false
	}
	return walk(n.viewer.View(ctx, -1))
}

// CreateToken implements api.Backend: a token for a new child of this node
// or of a relay below it.
func (n *Node) CreateToken(ctx context.Context, req api.TokenRequest) (api.Token, error) {
	if n.issuer == nil {
		return api.Token{}, api.BadRequest("this node is a client and cannot enroll nodes: create the token on its relay")
	}
	role, err := cert.ParseRole(req.Role)
	if err != nil || role == cert.RoleServer {
		return api.Token{}, api.BadRequest("--role %q: a token enrolls a client or a relay", req.Role)
	}
	ttl := n.cfg.Enroll.TokenTTL.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return api.Token{}, api.BadRequest("--ttl %q: use a positive duration like 30m or 24h", req.TTL)
		}
	}
	self := n.Cert()
	t := cert.Token{Role: role, Site: self.Site, Groups: req.Groups, Parent: n.host.ID(), Addrs: n.host.Addrs()}
	if req.Parent != "" && req.Parent != n.host.ID().String() {
		p, err := peer.Decode(req.Parent)
		if err != nil {
			return api.Token{}, api.BadRequest("--parent %q is not a peer ID: %v", req.Parent, err)
		}
		node, ok := n.find(ctx, p)
		if !ok {
			return api.Token{}, api.BadRequest("--parent %s is not in this node's subtree: see 'swdist tree'", p)
		}
		if node.Role != string(cert.RoleRelay) {
			return api.Token{}, api.BadRequest("--parent %s is a %s; only a server or relay can have children", p, node.Role)
		}
		t.Parent, t.Site, t.Addrs = p, node.Site, nil
		for _, a := range node.Addrs {
			if addr, err := ma.NewMultiaddr(a); err == nil {
				t.Addrs = append(t.Addrs, addr)
			}
		}
		if len(t.Addrs) == 0 {
			return api.Token{}, api.BadRequest("no address is known for --parent %s: it has never been online", p)
		}
	}
	if req.Site != "" {
		t.Site = req.Site
	}
	if len(t.Addrs) > 32 {
		t.Addrs = t.Addrs[:32]
	}
	text, tok, err := n.issuer.MintToken(t, ttl)
	if err != nil {
		return api.Token{}, api.BadRequest("%v", err)
	}
	return api.Token{Token: text, ExpiresAt: tok.ExpiresAt, Parent: tok.Parent.String(), Role: string(tok.Role),
		Site: tok.Site, Groups: nonNil(tok.Groups)}, nil
}

// Revoke implements api.Backend: revoke a node of this node's subtree.
func (n *Node) Revoke(ctx context.Context, req api.RevokeRequest) (api.Revocation, error) {
	p, err := peer.Decode(req.Peer)
	if err != nil {
		return api.Revocation{}, api.BadRequest("%q is not a peer ID: %v", req.Peer, err)
	}
	if p == n.host.ID() {
		return api.Revocation{}, api.BadRequest("a node cannot revoke itself: revoke it from its parent")
	}
	if _, known := n.registry.Get(p); !known {
		if _, ok := n.find(ctx, p); !ok {
			return api.Revocation{}, api.BadRequest("%s is not in this node's subtree: revoke it from one of its ancestors (see 'swdist tree')", p)
		}
	}
	r, err := n.revoker.Revoke(ctx, p, req.Reason)
	if err != nil {
		return api.Revocation{}, err
	}
	return api.Revocation{Peer: p.String(), RevokedBy: r.Revoker.String(), RevokedAt: r.At, Reason: r.Reason}, nil
}
