package exchange

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
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
func start(t *testing.T, o certtest.Org, n certtest.Node) *node {
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
	s := New(h, Config{Member: m, Store: st, Logger: quiet})
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

func ask(t *testing.T, ctx context.Context, from, to *node, c cid.Cid) network.Stream {
	t.Helper()
	str, err := from.h.NewStream(ctx, to.h.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { str.Reset() })
	if err := wire.Write(str, want{CIDs: [][]byte{c.Bytes()}}); err != nil {
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
	server := start(t, o, rn)
	client := start(t, o, o.Child(t, rn, cert.RoleRelay, "a"))
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
