package swarm_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/swdist/swdist/content/swarm"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/membertest"
	"github.com/swdist/swdist/internal/wire"
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
				sw, err := n.svc.Peers(ctx, pkg, nil)
				answers <- answer{n.h.ID(), sw.Peers, err}
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

// TestOthersWait: each relay says, when it asks for its peers, what it
// still waits for from each of them; the parent answers each with what
// the others said they wait for (the rest of each peer's uplink), not
// counting the asker's own words, nor those of a child of another kind.
func TestOthersWait(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	root := start(t, o, rn, nil, 10*time.Millisecond)
	var relays []*node
	for _, site := range []string{"a", "b", "c"} {
		n := start(t, o, o.Child(t, rn, cert.RoleRelay, site), &rn, 0)
		connect(t, n, root)
		relays = append(relays, n)
	}
	client := start(t, o, o.Child(t, rn, cert.RoleClient, "a"), &rn, 0)
	connect(t, client, root)
	a, b, c := relays[0].h.ID(), relays[1].h.ID(), relays[2].h.ID()
	pkg := testCID(t, "package 1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range append(relays, client) { // all fetch it, none has said yet
		if _, err := n.svc.Peers(ctx, pkg, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		who   *node
		waits map[peer.ID]uint64
		want  map[peer.ID]uint64 // what the others said
	}{
		{relays[0], map[peer.ID]uint64{b: 100, c: 200}, map[peer.ID]uint64{}},
		{relays[1], map[peer.ID]uint64{a: 10, c: 20}, map[peer.ID]uint64{c: 200}},
		{client, map[peer.ID]uint64{a: 5000, b: 5000, c: 5000}, map[peer.ID]uint64{}},
		{relays[2], map[peer.ID]uint64{a: 1, b: 2}, map[peer.ID]uint64{a: 10, b: 100}},
		{relays[0], map[peer.ID]uint64{b: 50, c: 0}, map[peer.ID]uint64{b: 2, c: 20}},
	} {
		sw, err := step.who.svc.Peers(ctx, pkg, step.waits)
		if err != nil {
			t.Fatalf("%s asks: %v", step.who.h.ID(), err)
		}
		if diff := cmp.Diff(step.want, sw.OthersWait, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s told what the others wait for (-want +got):\n%s", step.who.h.ID(), diff)
		}
	}
}

// TestVersionBefore: a child of the version before Waits (it speaks
// ProtocolV1) is answered without OthersWait, which it would reject; a
// parent of that version is asked without Waits, which it would reject.
func TestVersionBefore(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	root := start(t, o, rn, nil, 10*time.Millisecond)
	newer := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), &rn, 0)
	connect(t, newer, root)
	third := start(t, o, o.Child(t, rn, cert.RoleRelay, "c"), &rn, 0)
	connect(t, third, root)
	older := start(t, o, o.Child(t, rn, cert.RoleRelay, "b"), &rn, 0)
	connect(t, older, root)
	pkg := testCID(t, "package 1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := third.svc.Peers(ctx, pkg, nil); err != nil {
		t.Fatal(err)
	}
	// What the older one's peer, third, has left: newer waits for it.
	if _, err := newer.svc.Peers(ctx, pkg, map[peer.ID]uint64{third.h.ID(): 100}); err != nil {
		t.Fatal(err)
	}
	str, err := older.h.NewStream(ctx, root.h.ID(), swarm.ProtocolV1)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := wire.Call[map[int]any, map[int]any](str, map[int]any{0: pkg.Bytes()}, 64<<10)
	if err != nil {
		t.Fatalf("a child of the version before asks: %v", err)
	}
	if _, ok := resp[0]; !ok {
		t.Errorf("a child of the version before got no peers: %v", resp)
	}
	for k := range resp {
		if k != 0 && k != 1 {
			t.Errorf("a child of the version before got field %d, which it does not know: %v", k, resp)
		}
	}

	// A parent of the version before: it serves ProtocolV1 only.
	pn := o.RootNode(t)
	old := membertest.Start(t, o, pn)
	asked := make(chan map[int]any, 1)
	old.H.SetStreamHandler(swarm.ProtocolV1, func(s network.Stream) {
		_ = wire.Serve(s, 64<<10, func(req map[int]any) (map[int]any, error) {
			asked <- req
			return map[int]any{}, nil
		})
	})
	child := start(t, o, o.Child(t, pn, cert.RoleRelay, "c"), &pn, 0)
	membertest.Connect(t, &membertest.Node{H: child.h, M: child.m}, old)
	if _, err := child.svc.Peers(ctx, pkg, map[peer.ID]uint64{newer.h.ID(): 100}); err != nil {
		t.Fatalf("asking a parent of the version before: %v", err)
	}
	if req := <-asked; len(req) != 1 || req[0] == nil {
		t.Errorf("a parent of the version before was asked %v, want the package alone", req)
	}
}
