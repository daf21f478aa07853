// Package membertest starts real libp2p hosts on loopback, each with a
// membership service that verifies its peers' certificates, for the tests
// of the protocols built on them.
package membertest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
)

// Node is a host and its membership service.
type Node struct {
	H host.Host
	M *member.Service
	// BW counts the host's stream bytes, by peer and protocol.
	BW *metrics.BandwidthCounter
}

// Start runs a host for n on 127.0.0.1 (TCP), verifying peers of org o;
// both close when the test ends.
func Start(t testing.TB, o certtest.Org, n certtest.Node) *Node {
	t.Helper()
	g := member.NewGater()
	bw := metrics.NewBandwidthCounter()
	h, err := libp2p.New(libp2p.Identity(n.Key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ConnectionGater(g),
		libp2p.BandwidthReporter(bw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	m := member.New(h, g, member.Config{Verifier: o.V, Chain: func() cert.Chain { return n.Chain }, HelloTimeout: 5 * time.Second,
		RecheckEvery: time.Hour, Logger: Quiet()})
	m.Start()
	t.Cleanup(m.Close)
	return &Node{H: h, M: m, BW: bw}
}

// Connect connects a to b and waits until each verified the other.
func Connect(t testing.TB, a, b *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.H.Connect(ctx, peer.AddrInfo{ID: b.H.ID(), Addrs: b.H.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.M.Wait(ctx, b.H.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.M.Wait(ctx, a.H.ID()); err != nil {
		t.Fatal(err)
	}
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// StopAnswering has h answer nothing on protos and on ping, as a process
// that was stopped (which a test in one process cannot have) while its
// connections live on: each stream there is held, unread, until release
// is called, then reset. Release, which the end of the test calls too,
// leaves the handlers in place: whoever wants them answering again sets
// them anew.
func StopAnswering(t testing.TB, h host.Host, protos ...protocol.ID) (release func()) {
	return Hang(t, h, append(protos, ping.ID)...)
}

// Hang has h's handlers for protos hold every stream until release (or
// the test's end), then reset it, as handlers stuck on a disk that stopped
// answering would; h answers on other protocols as before.
func Hang(t testing.TB, h host.Host, protos ...protocol.ID) (release func()) {
	done := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	held := func(s network.Stream) {
		<-done
		_ = s.Reset()
	}
	for _, p := range protos {
		h.SetStreamHandler(p, held)
	}
	return release
}
