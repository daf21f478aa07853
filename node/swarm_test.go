package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

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
	// Each relay fetches the root block itself; every chunk crosses the
	// server's link once, but for the few (endgameShare of the package)
	// a relay takes from the server at the end instead of its sibling.
	extra := total(served) - (p.Chunks + 2)
	if extra < 0 || float64(extra) > node.EndgameShare*float64(p.Chunks)+2 {
		t.Errorf("the server served %d blocks (%v); want each of the %d chunks once, the root to each relay and at most %.0f%% more", total(served), served, p.Chunks, node.EndgameShare*100)
	}
	ab := c.nodes["relay-a"].BlocksServed()[c.id("relay-b")]
	ba := c.nodes["relay-b"].BlocksServed()[c.id("relay-a")]
	if ab == 0 || ba == 0 || ab+ba+extra != p.Chunks {
		t.Errorf("relay-a served relay-b %d blocks and relay-b served relay-a %d, the server %d twice; want shares adding up to %d", ab, ba, extra, p.Chunks)
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
