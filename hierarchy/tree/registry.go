// Package tree keeps a node's place in the hierarchy: the registry of its
// children (online or not, last seen), the link to its parent that
// reconnects with jittered exponential backoff, and the tree protocol that
// lets a managing node show its whole subtree.
package tree

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
)

// Child is what a node knows of one of its children.
type Child struct {
	PeerID   peer.ID
	Role     cert.Role
	Site     string
	Groups   []string
	Addrs    []string
	Online   bool
	LastSeen time.Time
	Revoked  bool
}

// Store persists the registry, so that offline children are still shown
// after a restart.
type Store interface {
	SaveChild(ctx context.Context, c Child) error
	LoadChildren(ctx context.Context) ([]Child, error)
}

// Registry is the set of a node's children.
type Registry struct {
	self  peer.ID
	store Store
	log   *slog.Logger

	mu       sync.Mutex
	children map[peer.ID]*Child
}

// NewRegistry loads the children of self from store; all start offline.
func NewRegistry(ctx context.Context, self peer.ID, store Store, log *slog.Logger) (*Registry, error) {
	list, err := store.LoadChildren(ctx)
	if err != nil {
		return nil, fmt.Errorf("load children: %w", err)
	}
	r := &Registry{self: self, store: store, log: log, children: map[peer.ID]*Child{}}
	for _, c := range list {
		c.Online = false
		r.children[c.PeerID] = &c
	}
	return r, nil
}

func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

func (r *Registry) save(c Child) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.store.SaveChild(ctx, c); err != nil {
		r.log.Error("save child", "peer", c.PeerID, "err", err)
	}
}

// update applies f to p's record (creating it) and persists the result.
func (r *Registry) update(p peer.ID, f func(*Child)) {
	r.mu.Lock()
	c, ok := r.children[p]
	if !ok {
		c = &Child{PeerID: p}
		r.children[p] = c
	}
	f(c)
	snapshot := *c
	r.mu.Unlock()
	r.save(snapshot)
}

// Issued records a child whose certificate this node issued or renewed.
func (r *Registry) Issued(c cert.Cert, addrs []ma.Multiaddr) {
	if c.Parent != r.self {
		return
	}
	r.update(c.PeerID, func(ch *Child) {
		ch.Role, ch.Site, ch.Groups = c.Role, c.Site, c.Groups
		if len(addrs) > 0 {
			ch.Addrs = addrStrings(addrs)
		}
		ch.LastSeen = time.Now()
	})
}

// Up marks a verified peer online if it is a child of this node.
func (r *Registry) Up(c cert.Cert, addrs []ma.Multiaddr) bool {
	if c.Parent != r.self {
		return false
	}
	r.update(c.PeerID, func(ch *Child) {
		ch.Role, ch.Site, ch.Groups = c.Role, c.Site, c.Groups
		if len(addrs) > 0 {
			ch.Addrs = addrStrings(addrs)
		}
		ch.Online, ch.LastSeen, ch.Revoked = true, time.Now(), false
	})
	return true
}

// Down marks a child offline, keeping its last known addresses.
func (r *Registry) Down(p peer.ID, addrs []ma.Multiaddr) {
	r.mu.Lock()
	_, ok := r.children[p]
	r.mu.Unlock()
	if !ok {
		return
	}
	r.update(p, func(ch *Child) {
		if ch.Online {
			ch.LastSeen = time.Now()
		}
		if len(addrs) > 0 {
			ch.Addrs = addrStrings(addrs)
		}
		ch.Online = false
	})
}

// Revoked marks a child revoked, if it is one.
func (r *Registry) Revoked(p peer.ID) {
	r.mu.Lock()
	_, ok := r.children[p]
	r.mu.Unlock()
	if ok {
		r.update(p, func(ch *Child) { ch.Online, ch.Revoked = false, true })
	}
}

// Get returns one child's record.
func (r *Registry) Get(p peer.ID) (Child, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.children[p]
	if !ok {
		return Child{}, false
	}
	return *c, true
}

// List returns the children, relays first, then by site and peer ID.
func (r *Registry) List() []Child {
	r.mu.Lock()
	out := make([]Child, 0, len(r.children))
	for _, c := range r.children {
		out = append(out, *c)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Child) int {
		if a.Role != b.Role {
			if a.Role == cert.RoleRelay {
				return -1
			}
			if b.Role == cert.RoleRelay {
				return 1
			}
		}
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		return strings.Compare(string(a.PeerID), string(b.PeerID))
	})
	return out
}
