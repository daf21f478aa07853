package exchange

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/ratelimit"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/membertest"
	"github.com/swdist/swdist/internal/wire"
)

type node struct {
	*membertest.Node
	store *blocks.Store
	svc   *Service
}

// start runs, for n, a real host on loopback with a member service, a
// block store in a temporary directory and this package's service.
func start(t *testing.T, o certtest.Org, n certtest.Node, remote func(member.Peer) bool) *node {
	t.Helper()
	return startWith(t, o, n, Config{Remote: remote})
}

// startWith is start with cfg's Remote and Upstream.
func startWith(t *testing.T, o certtest.Org, n certtest.Node, cfg Config) *node {
	t.Helper()
	mn := membertest.Start(t, o, n)
	st := openStore(t)
	cfg.Member, cfg.Store, cfg.Logger = mn.M, st, membertest.Quiet()
	cfg.BytesIn = func(p peer.ID) int64 { return mn.BW.GetBandwidthForPeer(p).TotalIn }
	s := New(mn.H, cfg)
	s.Start()
	t.Cleanup(s.Close)
	return &node{Node: mn, store: st, svc: s}
}

// openStore opens a block store in a temporary directory, closed at the
// test's end.
func openStore(t *testing.T) *blocks.Store {
	t.Helper()
	st, err := blocks.Open(filepath.Join(t.TempDir(), "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func connect(t *testing.T, a, b *node) { membertest.Connect(t, a.Node, b.Node) }

func putRandom(t *testing.T, st *blocks.Store, size int) cid.Cid {
	t.Helper()
	c, data := randomBlock(t, size)
	if err := st.Put(context.Background(), c, data); err != nil {
		t.Fatal(err)
	}
	return c
}

// randomBlock is a block of size random bytes, and its CID.
func randomBlock(t *testing.T, size int) (cid.Cid, []byte) {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	c, err := blocks.CID(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	return c, data
}

// putLater is an Upstream for *server that stores block c (data) there d
// after it is asked for it, as a slow pull-through would.
func putLater(server **node, c cid.Cid, data []byte, d time.Duration) func(context.Context, member.Peer, []cid.Cid) error {
	return func(ctx context.Context, _ member.Peer, _ []cid.Cid) error {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
		return (*server).store.Put(ctx, c, data)
	}
}

func ask(t *testing.T, ctx context.Context, from, to *node, cids ...cid.Cid) network.Stream {
	t.Helper()
	return askOver(t, ctx, Protocol, from, to, cids...)
}

// askOver is ask in version proto.
func askOver(t *testing.T, ctx context.Context, proto protocol.ID, from, to *node, cids ...cid.Cid) network.Stream {
	t.Helper()
	str, err := from.H.NewStream(ctx, to.H.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { str.Reset() })
	w := want{}
	for _, c := range cids {
		w.CIDs = append(w.CIDs, c.Bytes())
	}
	if err := wire.Write(str, w); err != nil {
		t.Fatal(err)
	}
	return str
}

// TestOneBlockAtATimeToAPeer: a node writes one block at a time to a peer,
// whatever the number of its requests, so that each arrives whole as soon
// as it can rather than all at the end. A request whose block is being
// written, and not read, holds back the peer's next one; once it is read,
// the next follows. (Over real hosts on loopback: the block is larger than
// a stream's window, so its write waits for the reader.)
func TestOneBlockAtATimeToAPeer(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	server := start(t, o, rn, nil)
	client := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	connect(t, client, server)
	first := putRandom(t, server.store, 900<<10)
	second := putRandom(t, server.store, 1<<10)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s1 := ask(t, ctx, client, server, first)
	// The first block is on its way, so its write holds the turn.
	if _, err := io.ReadFull(s1, make([]byte, 1024)); err != nil {
		t.Fatalf("start of the first block: %v", err)
	}
	s2 := ask(t, ctx, client, server, second)
	got := make(chan error, 1)
	go func() {
		var r reply
		got <- wire.Read(s2, maxBlock+1024, &r)
	}()
	select {
	case err := <-got:
		t.Fatalf("the second request was answered (err %v) while the first block was still being written", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := io.Copy(io.Discard, s1); err != nil {
		t.Fatalf("rest of the first block: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second block: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the second request was not answered after the first block was read")
	}
}

// TestBlockGoesOutWhenStored: a block asked for that is not here yet goes
// out the moment it is stored, while the pull-through that brought it is
// still under way (a relay passes each block on as it arrives).
func TestBlockGoesOutWhenStored(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	c, data := randomBlock(t, 64<<10)
	held := make(chan struct{}) // the pull-through's other blocks never come
	t.Cleanup(func() { close(held) })
	var server *node
	server = startWith(t, o, rn, Config{Upstream: func(ctx context.Context, _ member.Peer, _ []cid.Cid) error {
		// The block comes a moment later, once the server has looked for
		// it and begun to wait.
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := server.store.Put(ctx, c, data); err != nil {
			return err
		}
		select {
		case <-held:
		case <-ctx.Done():
		}
		return nil
	}})
	client := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	connect(t, client, server)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := ask(t, ctx, client, server, c)
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var r reply
	if err := wire.Read(s, maxBlock+1024, &r); err != nil {
		t.Fatalf("the block was not sent while its pull-through went on: %v", err)
	}
	if r.Missing || string(r.Data) != string(data) {
		t.Fatalf("got missing=%v, %d bytes; want the block", r.Missing, len(r.Data))
	}
}

// stuckBeside starts a server that paces peers across its uplink, a slow
// peer whose request for a block larger than a stream's first window it
// has begun to answer (and which reads no more of it: s), and a fast
// peer; the server holds n more blocks, cids, for the fast one.
func stuckBeside(t *testing.T, ctx context.Context, n int) (server, fast *node, s network.Stream, cids []cid.Cid) {
	t.Helper()
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	server = start(t, o, rn, func(member.Peer) bool { return true })
	fast = start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	slow := start(t, o, o.Child(t, rn, cert.RoleRelay, "b"), nil)
	connect(t, fast, server)
	connect(t, slow, server)
	stuck := putRandom(t, server.store, 900<<10)
	for range n {
		cids = append(cids, putRandom(t, server.store, 256<<10))
	}
	s = ask(t, ctx, slow, server, stuck)
	if _, err := io.ReadFull(s, make([]byte, 1024)); err != nil { // its block is being written
		t.Fatalf("start of the slow peer's block: %v", err)
	}
	return server, fast, s, cids
}

// TestFairShareAcrossTheUplink: a peer at another site that has its
// blocks read fast does not take the uplink from one whose block is
// stuck (as over a connection that gets less of a full uplink): while the
// slow one's block is not read, the fast one gets two blocks (its slack),
// then one per fairMaxWait; once the slow one reads, the fast one gets
// the rest at once. Without the fair share it would have all of them at
// once from the start.
func TestFairShareAcrossTheUplink(t *testing.T) {
	const n = 12
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, fast, s, cids := stuckBeside(t, ctx, n)
	var got atomic.Int32
	fastDone := make(chan error, 1)
	began := time.Now()
	f := ask(t, ctx, fast, server, cids...)
	go func() {
		for range n {
			var r reply
			if err := wire.Read(f, maxBlock+1024, &r); err != nil {
				fastDone <- err
				return
			}
			if r.Missing {
				fastDone <- fmt.Errorf("block %x missing", r.CID)
				return
			}
			got.Add(1)
		}
		fastDone <- nil
	}()
	time.Sleep(3 * fairMaxWait / 2)
	had := int(got.Load())
	el := time.Since(began)
	if allowed := 2 + int(el/fairMaxWait); had > allowed {
		t.Errorf("the fast peer got %d of %d blocks in %v while the slow one's block was stuck: more than the %d a fair share allows", had, n, el.Round(time.Millisecond), allowed)
	}
	if _, err := io.Copy(io.Discard, s); err != nil {
		t.Fatalf("rest of the slow peer's block: %v", err)
	}
	read := time.Now()
	if err := <-fastDone; err != nil {
		t.Fatalf("fast peer: %v", err)
	}
	// Still held back, the rest would take a fairMaxWait each.
	if rest, took := n-had, time.Since(read); rest > 4 && took > time.Duration(rest-2)*fairMaxWait {
		t.Errorf("the fast peer's last %d blocks took %v after the slow one read its block: still held back", rest, took.Round(time.Millisecond))
	}
}

// TestStalledPeerHoldsNoOneBack: a peer at another site whose block has
// not been read for fairStalled no longer holds the others to its pace.
func TestStalledPeerHoldsNoOneBack(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out fairStalled")
	}
	const n = 40
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, fast, _, cids := stuckBeside(t, ctx, n)
	time.Sleep(fairStalled + fairMaxWait)
	began := time.Now()
	f := ask(t, ctx, fast, server, cids...)
	for i := range n {
		var r reply
		if err := wire.Read(f, maxBlock+1024, &r); err != nil || r.Missing {
			t.Fatalf("fast peer, block %d: %v (missing %v)", i, err, r.Missing)
		}
	}
	// Held back, 40 blocks would take 38 fairMaxWaits (7.6 s).
	if took := time.Since(began); took > n/2*fairMaxWait {
		t.Errorf("the fast peer took %v for %d blocks beside a stalled one: still held to its pace", took.Round(time.Millisecond), n)
	}
}

// TestPointedToASibling: a parent that sent a block to one child relay
// points another that asks for it to that one, which then serves it; the
// block crosses the parent's link once. An asker that insists
// (FetchForce) gets it from the parent; a sibling that is gone is not
// pointed to.
func TestPointedToASibling(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	relays := func(pr member.Peer) string {
		if pr.Cert.Role == cert.RoleRelay {
			return "relays"
		}
		return ""
	}
	parent := startWith(t, o, rn, Config{Kin: relays})
	a := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	b := start(t, o, o.Child(t, rn, cert.RoleRelay, "b"), nil)
	c := start(t, o, o.Child(t, rn, cert.RoleRelay, "c"), nil)
	for _, n := range []*node{a, b, c} {
		connect(t, n, parent)
	}
	x := putRandom(t, parent.store, 300<<10)
	y := putRandom(t, parent.store, 1<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fetch := func(n *node, force bool, cids ...cid.Cid) {
		t.Helper()
		f := n.svc.Fetch
		if force {
			f = n.svc.FetchForce
		}
		if missing, err := f(ctx, parent.H.ID(), cids); err != nil || len(missing) > 0 {
			t.Fatalf("fetch: missing %v, %v", missing, err)
		}
		for _, id := range cids {
			if ok, _ := n.store.Has(ctx, id); !ok {
				t.Fatalf("%s not held after the fetch", id)
			}
		}
	}
	served := func(from, to *node) int { return from.svc.Served()[to.H.ID()] }
	pointers := func() int {
		parent.svc.mu.Lock()
		defer parent.svc.mu.Unlock()
		return parent.svc.pointers
	}

	fetch(a, false, x)
	// b has not met a: the parent gives a's addresses with the pointer.
	fetch(b, false, x, y)
	if got := served(parent, b); got != 1 {
		t.Errorf("the parent sent b %d blocks, want 1 (y; x is a's)", got)
	}
	if got := served(a, b); got != 1 {
		t.Errorf("a sent b %d blocks, want 1 (x)", got)
	}
	if got := pointers(); got != 1 {
		t.Errorf("the parent pointed askers elsewhere for %d blocks, want 1", got)
	}
	// Asked with Force, the parent sends it itself.
	fetch(c, true, x)
	if got := served(parent, c); got != 1 {
		t.Errorf("the parent sent c, which insisted, %d blocks, want 1", got)
	}
	// With a and b gone, nobody is pointed to: the parent sends y again.
	if err := a.H.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.H.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone := time.Now().Add(10 * time.Second)
	for _, n := range []*node{a, b} {
		for _, ok := parent.M.Peer(n.H.ID()); ok; _, ok = parent.M.Peer(n.H.ID()) {
			if time.Now().After(waitGone) {
				t.Fatalf("the parent still counts %s as connected", n.H.ID())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fetch(c, false, y)
	if got := served(parent, c); got != 2 {
		t.Errorf("the parent sent c %d blocks in all, want 2 (x, then y with its sibling gone)", got)
	}
	if got := pointers(); got != 1 {
		t.Errorf("the parent pointed askers elsewhere for %d blocks in all, want 1 (none to a sibling gone)", got)
	}
}

// TestPointedToASiblingThatFails: a sibling pointed to that lacks the
// block answers "missing" after a short wait, without fetching it from its
// own parent (which would send it across its link anyway), and the asker
// takes it from the parent after all; that sibling is then left alone for
// a while.
func TestPointedToASiblingThatFails(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	parent := startWith(t, o, rn, Config{Kin: func(member.Peer) string { return "relays" }})
	var pulled atomic.Int32
	a := startWith(t, o, o.Child(t, rn, cert.RoleRelay, "a"), Config{Upstream: func(context.Context, member.Peer, []cid.Cid) error {
		pulled.Add(1)
		return nil
	}})
	b := start(t, o, o.Child(t, rn, cert.RoleRelay, "b"), nil)
	connect(t, a, parent)
	connect(t, b, parent)
	x := putRandom(t, parent.store, 1<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if missing, err := a.svc.Fetch(ctx, parent.H.ID(), []cid.Cid{x}); err != nil || len(missing) > 0 {
		t.Fatalf("a: missing %v, %v", missing, err)
	}
	if err := a.store.Delete(ctx, x); err != nil {
		t.Fatal(err)
	}
	if missing, err := b.svc.Fetch(ctx, parent.H.ID(), []cid.Cid{x}); err != nil || len(missing) > 0 {
		t.Fatalf("b: missing %v, %v", missing, err)
	}
	if ok, _ := b.store.Has(ctx, x); !ok {
		t.Fatal("b does not hold the block")
	}
	if got := parent.svc.Served()[b.H.ID()]; got != 1 {
		t.Errorf("the parent sent b %d blocks, want 1", got)
	}
	if b.H.Network().Connectedness(a.H.ID()) != network.Connected {
		t.Error("b never reached a, the sibling it was pointed to")
	}
	if n := pulled.Load(); n != 0 {
		t.Errorf("a, asked as the sibling pointed to, fetched from its parent %d times, want none", n)
	}
	if b.svc.holderOK(a.H.ID()) {
		t.Error("a, which failed b, may be asked again at once; want it left alone for a while")
	}
}

// sentToSibling starts a parent that points its child relays to each
// other, and child relays a and b (b with bcfg), each connected to it; a
// has fetched block x from the parent, which now points b to a for it.
func sentToSibling(t *testing.T, ctx context.Context, bcfg Config) (parent, a, b *node, x cid.Cid) {
	t.Helper()
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	parent = startWith(t, o, rn, Config{Kin: func(member.Peer) string { return "relays" }})
	a = start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	b = startWith(t, o, o.Child(t, rn, cert.RoleRelay, "b"), bcfg)
	connect(t, a, parent)
	connect(t, b, parent)
	x = putRandom(t, parent.store, 1<<10)
	if missing, err := a.svc.Fetch(ctx, parent.H.ID(), []cid.Cid{x}); err != nil || len(missing) > 0 {
		t.Fatalf("a: missing %v, %v", missing, err)
	}
	return parent, a, b, x
}

// TestPointedToASiblingOnceMore: the first request to the sibling pointed
// to fails at once (here its handler resets it; in the WAN benchmark, the
// connection had died under the asker: the sibling closed it while the
// asker's process was stopped). The asker asks the sibling once more,
// which serves it, rather than take the block from the parent and leave
// the sibling alone for a minute.
func TestPointedToASiblingOnceMore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	parent, a, b, x := sentToSibling(t, ctx, Config{})
	var resets atomic.Int32
	a.H.SetStreamHandler(Protocol, func(s network.Stream) {
		resets.Add(1)
		a.svc.Start() // the next request is served as usual
		_ = s.Reset()
	})
	if missing, err := b.svc.Fetch(ctx, parent.H.ID(), []cid.Cid{x}); err != nil || len(missing) > 0 {
		t.Fatalf("b: missing %v, %v", missing, err)
	}
	if n := resets.Load(); n != 1 {
		t.Fatalf("a's first request reset %d times, want 1", n)
	}
	if got := a.svc.Served()[b.H.ID()]; got != 1 {
		t.Errorf("a, the sibling b was pointed to, sent b %d blocks, want 1", got)
	}
	if got := parent.svc.Served()[b.H.ID()]; got != 0 {
		t.Errorf("the parent sent b %d blocks, want none: a held it", got)
	}
	if !b.svc.holderOK(a.H.ID()) {
		t.Error("a, which served b on the second request, is left alone")
	}
}

// TestStoppedSiblingPointedTo: the sibling the parent points to stops
// answering anything (its blocks and ping handlers never answer, as a
// stopped process; its connection lives on). The asker does not wait
// the 30 s a pointed-to sibling may take: the sibling, which owes it the
// block and sends nothing, is pinged, given up when the ping goes
// unanswered, and the block comes from the parent.
func TestStoppedSiblingPointedTo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	parent, a, b, x := sentToSibling(t, ctx, Config{Quiet: 300 * time.Millisecond})
	connect(t, a, b)
	membertest.StopAnswering(t, a.H, Protocols()...)
	if missing, err := b.svc.Fetch(ctx, parent.H.ID(), []cid.Cid{x}); err != nil || len(missing) > 0 {
		t.Fatalf("b, pointed to a stopped sibling (it may take 30 s): missing %v, %v", missing, err)
	}
	if got := parent.svc.Served()[b.H.ID()]; got != 1 {
		t.Errorf("the parent sent b %d blocks, want 1", got)
	}
	if !b.svc.GivenUp(a.H.ID()) {
		t.Fatal("b did not give a up")
	}
	// Heard from again (connected anew: the member handshake), a is no
	// longer given up, within the second the byte meters take.
	connect(t, a, b)
	for deadline := time.Now().Add(5 * time.Second); b.svc.GivenUp(a.H.ID()); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a, heard from again, is still given up")
		}
	}
}

// TestSendingPeerKept: a peer that owes blocks and answers neither the
// request nor pings, but keeps sending this node bytes on another
// protocol, is alive: it is not given up, however long the request
// waits. (Quiet is above the second at which libp2p's byte meters
// update; the peer holds the request for more than three times it.)
func TestSendingPeerKept(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	a := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	b := startWith(t, o, o.Child(t, rn, cert.RoleRelay, "b"), Config{Quiet: 1500 * time.Millisecond})
	connect(t, a, b)
	x := putRandom(t, a.store, 1<<10)
	release := membertest.StopAnswering(t, a.H, Protocols()...)
	const chatter = "/swdist/test/chatter"
	b.H.SetStreamHandler(chatter, func(s network.Stream) { _, _ = io.Copy(io.Discard, s) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := a.H.NewStream(ctx, b.H.ID(), chatter)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer s.Close()
		buf := make([]byte, 1024)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	time.AfterFunc(6*time.Second, release)
	_, _ = b.svc.Fetch(ctx, a.H.ID(), []cid.Cid{x}) // reset after 6 s
	if n := b.svc.GaveUp()[a.H.ID()]; n != 0 {
		t.Errorf("b gave a up %d times, though a kept sending", n)
	}
}

// TestStuckPeerFails: a request to a peer whose blocks handler hangs
// while the peer lives on (it answers pings, so the watch, which would
// have pinged it several times by then, keeps it) fails with ErrStuck
// once nothing came for Stuck, not at Timeout. (A fake: the
// handler never answers, as one stuck on its disk would; a disk that
// hangs cannot be had here.)
func TestStuckPeerFails(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	a := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	b := startWith(t, o, o.Child(t, rn, cert.RoleRelay, "b"), Config{Quiet: 300 * time.Millisecond, Stuck: 2 * time.Second, Timeout: time.Minute})
	connect(t, a, b)
	x := putRandom(t, a.store, 1<<10)
	membertest.Hang(t, a.H, Protocols()...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	missing, err := b.svc.Fetch(ctx, a.H.ID(), []cid.Cid{x})
	if !errors.Is(err, ErrStuck) || len(missing) != 1 {
		t.Fatalf("from a peer whose handler hangs: missing %v, %v; want it missing, with ErrStuck", missing, err)
	}
	if n := b.svc.GaveUp()[a.H.ID()]; n != 0 {
		t.Errorf("b gave a up %d times, though a answers pings", n)
	}
	if !b.svc.WasStuck(a.H.ID()) || b.svc.holderOK(a.H.ID()) {
		t.Errorf("a, stuck: WasStuck %v, and a parent's pointers to it followed %v; want true, false", b.svc.WasStuck(a.H.ID()), b.svc.holderOK(a.H.ID()))
	}
}

// TestWaitingAnswerBeats: an answer that waits longer than the asker's
// Stuck, for the server's own upstream or for its rate limit, says so
// (beats) and the block arrives; without the beats the asker would fail
// it with ErrStuck.
func TestWaitingAnswerBeats(t *testing.T) {
	const stuck = time.Second
	tests := []struct {
		name string
		held bool // the server holds the block from the start
		cfg  func(server **node, c cid.Cid, data []byte) Config
	}{
		{"pull-through", false, func(server **node, c cid.Cid, data []byte) Config {
			return Config{Upstream: putLater(server, c, data, 3*stuck)}
		}},
		{"rate limit", true, func(**node, cid.Cid, []byte) Config {
			// 64 KiB at 16 KiB/s: about 3 s of waits between its steps.
			lim := ratelimit.New(16<<10, nil)
			return Config{ServeLimit: func(member.Peer) *ratelimit.Limiter { return lim }}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := certtest.NewOrg(t)
			rn := o.RootNode(t)
			c, data := randomBlock(t, 64<<10)
			var server *node
			server = startWith(t, o, rn, tt.cfg(&server, c, data))
			if tt.held {
				if err := server.store.Put(context.Background(), c, data); err != nil {
					t.Fatal(err)
				}
			}
			client := startWith(t, o, o.Child(t, rn, cert.RoleRelay, "a"), Config{Stuck: stuck})
			connect(t, client, server)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if missing, err := client.svc.Fetch(ctx, server.H.ID(), []cid.Cid{c}); err != nil || len(missing) > 0 {
				t.Fatalf("an answer that waits: missing %v, %v", missing, err)
			}
		})
	}
}

// TestNoBeatsToOlderAskers: a node that asks over ProtocolV11 (which
// knows no beats, and whose nodes refuse fields they do not know) gets
// its block as the first answer, however long the answer waits, even if
// its request carries Beat.
func TestNoBeatsToOlderAskers(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	c, data := randomBlock(t, 1<<10)
	var server *node
	server = startWith(t, o, rn, Config{Upstream: putLater(&server, c, data, time.Second)})
	client := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	connect(t, client, server)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := client.H.NewStream(ctx, server.H.ID(), ProtocolV11)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if err := wire.Write(s, want{CIDs: [][]byte{c.Bytes()}, Beat: 50}); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var r reply
	if err := wire.Read(s, maxBlock+1024, &r); err != nil {
		t.Fatal(err)
	}
	if r.Wait || string(r.Data) != string(data) {
		t.Fatalf("first answer over %s: wait=%v, %d bytes; want the block", ProtocolV11, r.Wait, len(r.Data))
	}
}

// TestAskingAnOlderPeer: a peer that serves only ProtocolV11, and refuses
// fields it does not know (as its nodes do), is asked over it, without
// Beat, and its block arrives.
func TestAskingAnOlderPeer(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	// A member with a store, and no Service: only the handler below.
	older := &node{Node: membertest.Start(t, o, rn), store: openStore(t)}
	x := putRandom(t, older.store, 1<<10)
	type wantV11 struct { // want as 1.1.0 knows it
		CIDs    [][]byte `cbor:"0,keyasint"`
		Force   bool     `cbor:"1,keyasint,omitempty"`
		Pointed bool     `cbor:"2,keyasint,omitempty"`
	}
	older.H.SetStreamHandler(ProtocolV11, func(s network.Stream) {
		defer s.Close()
		var w wantV11
		if err := wire.Read(s, maxWantBytes, &w); err != nil || len(w.CIDs) != 1 {
			_ = s.Reset()
			return
		}
		data, err := older.store.Get(context.Background(), x)
		if err != nil {
			_ = s.Reset()
			return
		}
		_ = wire.Write(s, reply{CID: w.CIDs[0], Data: data})
	})
	client := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	connect(t, client, older)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if missing, err := client.svc.Fetch(ctx, older.H.ID(), []cid.Cid{x}); err != nil || len(missing) > 0 {
		t.Fatalf("from a peer of 1.1.0: missing %v, %v", missing, err)
	}
}

// TestStalledDiskStopsBeats: an answer that waits on a node whose disk
// stopped answering (its pull-through's blocks could not be stored) does
// not beat: the asker fails it as stuck. (The disk is said to be stalled
// through Config.Stalled: one that hangs cannot be had here.)
func TestStalledDiskStopsBeats(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	server := startWith(t, o, rn, Config{
		Upstream: func(ctx context.Context, _ member.Peer, _ []cid.Cid) error { <-ctx.Done(); return ctx.Err() },
		Stalled:  func(time.Duration) bool { return true },
	})
	client := startWith(t, o, o.Child(t, rn, cert.RoleRelay, "a"), Config{Stuck: 500 * time.Millisecond})
	connect(t, client, server)
	x := putRandom(t, client.store, 1<<10) // its CID only: the server lacks it
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := client.svc.Fetch(ctx, server.H.ID(), []cid.Cid{x}); !errors.Is(err, ErrStuck) {
		t.Fatalf("from a node whose disk stalled: %v; want ErrStuck", err)
	}
}
