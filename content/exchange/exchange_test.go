package exchange

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/wire"
)

type node struct {
	h     host.Host
	m     *member.Service
	store *blocks.Store
}

// start runs, for n, a real libp2p host on loopback with a member service,
// a block store in a temporary directory and this package's service.
func start(t *testing.T, o certtest.Org, n certtest.Node, remote func(member.Peer) bool) *node {
	t.Helper()
	g := member.NewGater()
	h, err := libp2p.New(libp2p.Identity(n.Key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ConnectionGater(g))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := member.New(h, g, member.Config{Verifier: o.V, Chain: func() cert.Chain { return n.Chain }, HelloTimeout: 5 * time.Second,
		RecheckEvery: time.Hour, Logger: quiet})
	m.Start()
	t.Cleanup(m.Close)
	st, err := blocks.Open(filepath.Join(t.TempDir(), "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(h, Config{Member: m, Store: st, Logger: quiet, Remote: remote})
	s.Start()
	t.Cleanup(s.Close)
	return &node{h: h, m: m, store: st}
}

func connect(t *testing.T, a, b *node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Wait(ctx, b.h.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.m.Wait(ctx, a.h.ID()); err != nil {
		t.Fatal(err)
	}
}

func putRandom(t *testing.T, st *blocks.Store, size int) cid.Cid {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	c, err := blocks.CID(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(context.Background(), c, data); err != nil {
		t.Fatal(err)
	}
	return c
}

func ask(t *testing.T, ctx context.Context, from, to *node, cids ...cid.Cid) network.Stream {
	t.Helper()
	str, err := from.h.NewStream(ctx, to.h.ID(), Protocol)
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

// TestFairShareAcrossTheUplink: two peers at other sites that ask for the
// same blocks get them at the same pace, though one reads slowly (as a
// connection that gets less of a full uplink would): the fast one is held
// to the slow one's pace, and when it has all its blocks the slow one has
// most of them too. Without the fair share the fast one would have all
// of them while the slow one had one or two.
func TestFairShareAcrossTheUplink(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	server := start(t, o, rn, func(member.Peer) bool { return true })
	fast := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"), nil)
	slow := start(t, o, o.Child(t, rn, cert.RoleRelay, "b"), nil)
	connect(t, fast, server)
	connect(t, slow, server)
	const n = 12
	var cids []cid.Cid
	for range n {
		cids = append(cids, putRandom(t, server.store, 512<<10)) // twice a stream's first window
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var slowRead atomic.Int32
	slowDone := make(chan error, 1)
	s := ask(t, ctx, slow, server, cids...)
	readOne := func(str network.Stream) error {
		var r reply
		if err := wire.Read(str, maxBlock+1024, &r); err != nil {
			return err
		}
		if r.Missing {
			return fmt.Errorf("block %x missing", r.CID)
		}
		return nil
	}
	if err := readOne(s); err != nil {
		t.Fatal(err)
	}
	slowRead.Add(1)
	go func() {
		for range n - 1 {
			time.Sleep(30 * time.Millisecond)
			if err := readOne(s); err != nil {
				slowDone <- err
				return
			}
			slowRead.Add(1)
		}
		slowDone <- nil
	}()
	f := ask(t, ctx, fast, server, cids...)
	for i := range n {
		if err := readOne(f); err != nil {
			t.Fatalf("fast peer, block %d: %v", i, err)
		}
	}
	if got := slowRead.Load(); got < n/2 {
		t.Errorf("when the fast peer had all %d blocks the slow one had read %d: the fast one was not held to its pace", n, got)
	}
	if err := <-slowDone; err != nil {
		t.Fatalf("slow peer: %v", err)
	}
}
