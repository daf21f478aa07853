package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/membertest"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
)

// randomPackage adds, on the node name, a package of size incompressible
// bytes: many chunks, none shrunk by compression.
func randomPackage(t *testing.T, c *cluster, name string, size int, seed uint64) api.Package {
	t.Helper()
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	_, _ = r.Read(b)
	return addPackage(t, c, name, map[string]string{"blob": string(b)}, "blob", fmt.Sprint(seed))
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestSitePeersShare: a client fetching a package that a client at its site
// already fetched takes that client's share of the blocks from it, not
// from the relay.
func TestSitePeersShare(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	p := randomPackage(t, c, "server", 4<<20, 1)
	if p.Chunks < 8 {
		t.Fatalf("want a package of many chunks, got %d", p.Chunks)
	}
	if _, err := c.nodes["a1"].FetchPackage(ctx, p.CID); err != nil {
		t.Fatal(err)
	}
	got, err := c.nodes["a2"].FetchPackage(ctx, p.CID)
	if err != nil || !got.Held {
		t.Fatalf("a2: %+v, %v", got, err)
	}
	fromA1 := c.nodes["a1"].BlocksServed()[c.id("a2")]
	fromRelay := c.nodes["relay-a"].BlocksServed()[c.id("a2")]
	if fromA1 == 0 || fromRelay >= p.Chunks+1 || fromA1+fromRelay != p.Chunks+1 {
		t.Errorf("a2 got %d blocks from a1 and %d from relay-a; want them shared, %d in all", fromA1, fromRelay, p.Chunks+1)
	}
	// A client at another site is not a peer for site a.
	if _, err := c.nodes["b1"].FetchPackage(ctx, p.CID); err != nil {
		t.Fatal(err)
	}
	if n := c.nodes["a1"].BlocksServed()[c.id("b1")] + c.nodes["a2"].BlocksServed()[c.id("b1")]; n != 0 {
		t.Errorf("site a's clients served %d blocks to b1 at site b", n)
	}
}

// TestSiblingRelaysShare: relays under the same parent that fetch a
// package at the same time split it: the server sends each block about
// once, and the relays pass each other their shares.
func TestSiblingRelaysShare(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	p := randomPackage(t, c, "server", 4<<20, 2)
	var wg sync.WaitGroup
	for _, name := range []string{"relay-a", "relay-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := c.nodes[name].FetchPackage(ctx, p.CID); err != nil || !got.Held {
				t.Errorf("%s: %+v, %v", name, got, err)
			}
		}()
	}
	wg.Wait()
	served := map[string]int{}
	for id, n := range c.nodes["server"].BlocksServed() {
		served[id.String()] = n
	}
	// Every chunk crosses the server's link once, but for the few
	// (endgameShare of the package) a relay takes from the server at the
	// end instead of its sibling; the root once or twice (the second
	// relay to ask may be pointed to the first).
	n := total(served)
	if n < p.Chunks+1 || float64(n) > float64(p.Chunks+2)+node.EndgameShare*float64(p.Chunks) {
		t.Errorf("the server served %d blocks (%v); want each of the %d chunks once, the root once or twice and at most %.0f%% more", n, served, p.Chunks, node.EndgameShare*100)
	}
	// Each relay needs every block: what the server did not send it, its
	// sibling did.
	ab := c.nodes["relay-a"].BlocksServed()[c.id("relay-b")]
	ba := c.nodes["relay-b"].BlocksServed()[c.id("relay-a")]
	if ab == 0 || ba == 0 || n+ab+ba != 2*(p.Chunks+1) {
		t.Errorf("relay-a served relay-b %d blocks, relay-b served relay-a %d and the server %d; want them adding up to %d, each relay's blocks", ab, ba, n, 2*(p.Chunks+1))
	}
}

// TestFallbackToAncestor: a client whose relay is down fetches from the
// server, its grandparent.
func TestFallbackToAncestor(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	p := randomPackage(t, c, "server", 1<<20, 3)
	if err := c.nodes["relay-a"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay-a offline", func() bool { return !onlineIn(c.nodes["server"], c.id("relay-a")) })
	got, err := c.nodes["a1"].FetchPackage(ctx, p.CID)
	if err != nil || !got.Held {
		t.Fatalf("a1 with its relay down: %+v, %v", got, err)
	}
	if n := c.nodes["server"].BlocksServed()[c.id("a1")]; n != p.Chunks+1 {
		t.Errorf("the server served a1 %d blocks, want %d", n, p.Chunks+1)
	}
}

// TestLateRelayFetchesFromSibling: a relay that fetches a package after
// its sibling has it takes the blocks from the sibling: the server, which
// sent them to the sibling already, points the late one there instead of
// sending them again across its own link.
func TestLateRelayFetchesFromSibling(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	p := randomPackage(t, c, "server", 4<<20, 4)
	if got, err := c.nodes["relay-a"].FetchPackage(ctx, p.CID); err != nil || !got.Held {
		t.Fatalf("relay-a: %+v, %v", got, err)
	}
	before := c.nodes["server"].BlocksServed()[c.id("relay-b")]
	if got, err := c.nodes["relay-b"].FetchPackage(ctx, p.CID); err != nil || !got.Held {
		t.Fatalf("relay-b: %+v, %v", got, err)
	}
	// What the endgame may still take from the server (it asks with
	// Force): endgameShare of the package between the two relays, less
	// than one chunk here.
	endgame := int(node.EndgameShare * float64(p.Chunks) / 2)
	fromServer := c.nodes["server"].BlocksServed()[c.id("relay-b")] - before
	fromSibling := c.nodes["relay-a"].BlocksServed()[c.id("relay-b")]
	if fromServer > endgame || fromServer+fromSibling != p.Chunks+1 {
		t.Errorf("relay-b got %d blocks from the server and %d from relay-a; want all %d from relay-a (%d from the server at most)", fromServer, fromSibling, p.Chunks+1, endgame)
	}
}

// TestStalledRelayFallsBack: a client's relay stops answering anything
// while the client fetches from it (its blocks and ping handlers never
// answer and it takes no new connections, as a stopped process; the
// connection it has lives on). The request timeout is the default 2
// minutes, yet the client gets the package within one: the relay, which
// owes it blocks and sends nothing, is pinged, given up when the ping
// goes unanswered, and the package comes from the server.
func TestStalledRelayFallsBack(t *testing.T) {
	c := newCluster(t)
	c.peerQuiet = 300 * time.Millisecond
	c.oneClient()
	ctx := context.Background()
	p := randomPackage(t, c, "server", 1<<20, 23)
	relay := c.nodes["relay-a"].Host()
	membertest.StopAnswering(t, relay, exchange.Protocols()...)
	relay.Network().(*swarm.Swarm).ListenClose(relay.Network().ListenAddresses()...)

	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := c.nodes["a1"].FetchPackage(fctx, p.CID)
	if err != nil || !got.Held {
		t.Fatalf("a1 with its relay stalled (the request timeout is 2 minutes): %+v, %v", got, err)
	}
	if n := c.nodes["server"].BlocksServed()[c.id("a1")]; n != p.Chunks+1 {
		t.Errorf("the server served a1 %d blocks, want %d", n, p.Chunks+1)
	}
}

// TestStuckRelayFallsBack: a client's relay whose blocks handler hangs,
// as one on a disk that stopped answering, while the relay lives on (it
// answers pings, so it is never given up). The request timeout is the
// default 2 minutes, yet the client gets the package within one: its
// requests to the relay get nothing, not even word that the relay waits,
// and fail as stuck, and the package comes from the server. (A fake: the
// relay's blocks handlers hold every stream. The watch, which would have
// pinged the relay several times by then, keeps it.)
func TestStuckRelayFallsBack(t *testing.T) {
	c := newCluster(t)
	c.peerQuiet, c.peerStuck = 300*time.Millisecond, 2*time.Second
	c.oneClient()
	ctx := context.Background()
	p := randomPackage(t, c, "server", 1<<20, 25)
	membertest.Hang(t, c.nodes["relay-a"].Host(), exchange.Protocols()...)

	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := c.nodes["a1"].FetchPackage(fctx, p.CID)
	if err != nil || !got.Held {
		t.Fatalf("a1 with its relay's blocks handler stuck (the request timeout is 2 minutes): %+v, %v", got, err)
	}
	if n := c.nodes["server"].BlocksServed()[c.id("a1")]; n != p.Chunks+1 {
		t.Errorf("the server served a1 %d blocks, want %d", n, p.Chunks+1)
	}
	if n := c.nodes["a1"].GaveUp()[c.id("relay-a")]; n != 0 {
		t.Errorf("a1 gave its relay up %d times, though it answers pings", n)
	}
}

// TestRelayWaitsForStalledRoot: a relay under the root has no ancestor to
// fall back to. When the root stops answering for a while (its blocks and
// ping handlers hold every request for 2 s, 6 times the stopped-peer
// check's wait and 4 times the stuck one's, then reset it), the relay
// neither gives it up nor passes it over as stuck, which would leave it
// nowhere to fetch from: its requests fail only when reset, and are asked
// again. (The relay holds the package's root block
// already: a stalled handler here cannot hand its stream on to the real
// one, and the root block, unlike the others, is not asked again after a
// reset.)
func TestRelayWaitsForStalledRoot(t *testing.T) {
	c := newCluster(t)
	c.peerQuiet, c.peerStuck = 300*time.Millisecond, 500*time.Millisecond
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	eventually(t, "relay-a online", func() bool { return onlineIn(c.nodes["server"], c.id("relay-a")) })
	ctx := context.Background()
	p := randomPackage(t, c, "server", 1<<20, 24)
	root, err := cid.Decode(p.CID)
	if err != nil {
		t.Fatal(err)
	}
	server, relay := c.nodes["server"], c.nodes["relay-a"]
	if err := relay.CopyBlock(ctx, server, root); err != nil {
		t.Fatal(err)
	}
	release := membertest.StopAnswering(t, server.Host(), exchange.Protocols()...)
	time.AfterFunc(2*time.Second, func() {
		server.ServeBlocks()
		server.Host().SetStreamHandler(ping.ID, ping.NewPingService(server.Host()).PingHandler)
		release()
	})
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if got, err := relay.FetchPackage(fctx, p.CID); err != nil || !got.Held {
		t.Fatalf("relay-a, its root stalled for 2 s: %+v, %v", got, err)
	}
	if n := relay.GaveUp()[c.id("server")]; n != 0 {
		t.Errorf("relay-a gave its root up %d times; it has nowhere else to fetch from", n)
	}
}
