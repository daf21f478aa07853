package node_test

import (
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/membertest"
	"github.com/swdist/swdist/internal/wire"
)

// What a member asks on the blocks protocol and what it gets, as the wire
// carries them (the exchange's own types are unexported).
type wantMsg struct {
	CIDs [][]byte `cbor:"0,keyasint"`
	Beat int64    `cbor:"3,keyasint,omitempty"` // 1.2.0: how often an answer that waits says so, ms
}

type replyMsg struct {
	CID  []byte `cbor:"0,keyasint"`
	Data []byte `cbor:"1,keyasint,omitempty"`
}

// TestBadSitePeers: of a client's site peers for a package, one holds
// corrupted blocks, one answers with bytes that do not match the CIDs
// asked, and one stalls. The client still gets the whole package, every
// block checked: what those peers should have given it comes from the
// relay, the peer that lied is counted, and the stalled one is given up
// after the request timeout.
func TestBadSitePeers(t *testing.T) {
	c := newCluster(t)
	c.blockTimeout = 2 * time.Second
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	for _, name := range []string{"a1", "a2", "a3", "a4"} {
		c.join(name, "relay-a", cert.RoleClient, "a")
	}
	for _, name := range []string{"relay-a", "a1", "a2", "a3", "a4"} {
		eventually(t, name+" online", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
	}
	ctx := context.Background()
	p := randomPackage(t, c, "server", 8<<20, 21)
	// a1, a3 and a4 fetch it first: the relay names them as a2's peers.
	for _, name := range []string{"a1", "a3", "a4"} {
		if _, err := c.nodes[name].FetchPackage(ctx, p.CID); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// a1's store rots: every block file has a byte flipped.
	rotted := 0
	err := filepath.WalkDir(filepath.Join(c.home("a1").Dir, "blocks"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".data") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return err
		}
		b[len(b)/2] ^= 0xff
		rotted++
		return os.WriteFile(path, b, 0o644)
	})
	if err != nil || rotted < p.Chunks {
		t.Fatalf("corrupting a1's blocks: %d files, %v", rotted, err)
	}
	// a3 lies: it answers each CID with random bytes.
	c.nodes["a3"].Host().SetStreamHandler(exchange.Protocol, func(s network.Stream) {
		defer s.Close()
		var w wantMsg
		if wire.Read(s, 1<<16, &w) != nil {
			return
		}
		for _, id := range w.CIDs {
			junk := make([]byte, 1000)
			for i := range junk {
				junk[i] = byte(rand.IntN(256))
			}
			if wire.Write(s, replyMsg{CID: id, Data: junk}) != nil {
				return
			}
		}
	})
	// a4 stalls: it reads the request and never answers.
	c.nodes["a4"].Host().SetStreamHandler(exchange.Protocol, func(s network.Stream) {
		var w wantMsg
		_ = wire.Read(s, 1<<16, &w)
		time.Sleep(10 * time.Second)
		_ = s.Reset()
	})

	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	got, err := c.nodes["a2"].FetchPackage(fctx, p.CID)
	if err != nil || !got.Held {
		t.Fatalf("a2 among bad peers: %+v, %v", got, err)
	}
	if n := c.nodes["a2"].BadBlocks()[c.id("a3")]; n == 0 {
		t.Errorf("a2 counted no bad blocks from a3, which sent only junk")
	}
	if n := c.nodes["a1"].BlocksServed()[c.id("a2")]; n != 0 {
		t.Errorf("a1 served %d blocks from a rotten store", n)
	}
	if n := c.nodes["relay-a"].BlocksServed()[c.id("a2")]; n < p.Chunks/2 {
		t.Errorf("relay-a served a2 %d of %d blocks; want the bad peers' shares from it", n, p.Chunks)
	}
}

// TestStoppedSitePeer: one of a client's site peers stops answering,
// while the client fetches from it. The request timeout is the default 2
// minutes, yet the client gets the whole package within one, its share
// from the relay and the other peer:
//   - stopped: the peer answers nothing at all, as a process that was
//     stopped or a machine that froze. It owes the client blocks and sends
//     nothing, so it is pinged, and given up when the ping goes
//     unanswered.
//   - stuck: only its blocks handler hangs, as one on a disk that stopped
//     answering; it answers pings, so the watch keeps it. Its answers send
//     nothing, not even word that they wait, so they fail as stuck.
//
// (Fakes, as neither a stopped process nor a hung disk can be had in this
// one: the peer's handlers hold every stream; its connection lives on.)
func TestStoppedSitePeer(t *testing.T) {
	tests := []struct {
		name         string
		quiet, stuck time.Duration
		stop         func(t testing.TB, h host.Host, protos ...protocol.ID) (release func())
	}{
		{"stopped", 300 * time.Millisecond, 0, membertest.StopAnswering},
		{"stuck", 300 * time.Millisecond, 2 * time.Second, membertest.Hang},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			c.peerQuiet, c.peerStuck = tt.quiet, tt.stuck
			c.root("server", cert.RoleServer, 0)
			c.join("relay-a", "server", cert.RoleRelay, "a")
			for _, name := range []string{"a1", "a2", "a3"} {
				c.join(name, "relay-a", cert.RoleClient, "a")
			}
			for _, name := range []string{"relay-a", "a1", "a2", "a3"} {
				eventually(t, name+" online", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
			}
			ctx := context.Background()
			p := randomPackage(t, c, "server", 8<<20, 22)
			// a1 and a3 fetch it first: the relay names them as a2's peers.
			for _, name := range []string{"a1", "a3"} {
				if _, err := c.nodes[name].FetchPackage(ctx, p.CID); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
			tt.stop(t, c.nodes["a3"].Host(), exchange.Protocols()...)

			fctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			got, err := c.nodes["a2"].FetchPackage(fctx, p.CID)
			if err != nil || !got.Held {
				t.Fatalf("a2 with a %s peer (the request timeout is 2 minutes): %+v, %v", tt.name, got, err)
			}
			if n := c.nodes["a3"].BlocksServed()[c.id("a2")]; n != 0 {
				t.Errorf("a3, %s, served a2 %d blocks", tt.name, n)
			}
			// Stuck, it answers pings: the watch, which would have pinged
			// it several times, keeps it.
			if n := c.nodes["a2"].GaveUp()[c.id("a3")]; (n > 0) != (tt.name == "stopped") {
				t.Errorf("a2 gave a3, %s, up %d times", tt.name, n)
			}
			if relay, a1 := c.nodes["relay-a"].BlocksServed()[c.id("a2")], c.nodes["a1"].BlocksServed()[c.id("a2")]; relay+a1 < p.Chunks {
				t.Errorf("relay-a and a1 served a2 %d and %d blocks, of %d", relay, a1, p.Chunks)
			}
		})
	}
}
