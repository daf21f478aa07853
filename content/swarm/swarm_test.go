package swarm_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/swdist/swdist/content/swarm"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/membertest"
)

type node struct {
	h   host.Host
	m   *member.Service
	svc *swarm.Service
}

// start runs, for n, a real libp2p host on loopback with a member service
// and a swarm service: the root's (parent nil) serves, a child's asks.
func start(t *testing.T, o certtest.Org, n certtest.Node, parent *certtest.Node, gather time.Duration) *node {
	t.Helper()
	mn := membertest.Start(t, o, n)
	cfg := swarm.Config{Member: mn.M, Gather: gather, Logger: membertest.Quiet()}
	if parent != nil {
		cfg.Parent = parent.ID
	}
	s := swarm.New(mn.H, cfg)
	if parent == nil {
		s.Start()
		t.Cleanup(s.Close)
	}
	return &node{h: mn.H, m: mn.M, svc: s}
}

// connect connects child to parent and waits until each verified the other.
func connect(t *testing.T, child, parent *node) {
	t.Helper()
	membertest.Connect(t, &membertest.Node{H: child.h, M: child.m}, &membertest.Node{H: parent.h, M: parent.m})
}

// TestGatherEndsWhenAllAlikeAsked: the first child to ask for a package
// waits for the others of its kind (relays; clients of its site) so that
// all get the same peers; once every connected one of them has asked, all
// are answered at once, without waiting out Gather (a minute here: a wait
// for it would overrun the test's context). A connected child of another
// kind that never asks does not hold them up.
func TestGatherEndsWhenAllAlikeAsked(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	root := start(t, o, rn, nil, time.Minute)
	groups := map[string][]*node{}
	for _, k := range []struct {
		role  cert.Role
		site  string
		group string
	}{
		{cert.RoleRelay, "a", "relays"}, {cert.RoleRelay, "b", "relays"}, {cert.RoleRelay, "c", "relays"},
		{cert.RoleClient, "a", "clients at site a"}, {cert.RoleClient, "a", "clients at site a"},
		{cert.RoleClient, "z", ""}, // never asks
	} {
		n := start(t, o, o.Child(t, rn, k.role, k.site), &rn, time.Minute)
		connect(t, n, root)
		groups[k.group] = append(groups[k.group], n)
	}
	pkg := testCID(t, "package 1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, group := range groups {
		if name == "" {
			continue
		}
		type answer struct {
			id    peer.ID
			peers []peer.ID
			err   error
		}
		answers := make(chan answer, len(group))
		for i, n := range group {
			go func() {
				p, err := n.svc.Peers(ctx, pkg)
				answers <- answer{n.h.ID(), p, err}
			}()
			if i == 0 {
				// The first is waiting for the others by now: it learns
				// of them only if its answer waited for their asking.
				time.Sleep(100 * time.Millisecond)
			}
		}
		for range group {
			a := <-answers
			if a.err != nil {
				t.Fatalf("%s: %s: %v", name, a.id, a.err)
			}
			var want []peer.ID
			for _, n := range group {
				if n.h.ID() != a.id {
					want = append(want, n.h.ID())
				}
			}
			slices.Sort(want)
			slices.Sort(a.peers)
			if !slices.Equal(a.peers, want) {
				t.Errorf("%s: %s got peers %v, want %v", name, a.id, a.peers, want)
			}
		}
	}
}

func testCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}
