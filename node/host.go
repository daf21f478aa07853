package node

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	cmgr "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/node/config"
)

// Version is swdist's version, shown to peers and operators.
const Version = "0.1.0"

// newHost builds the libp2p host: TCP and QUIC only, Noise only, no relay,
// no NAT traversal, and resource and connection limits sized for the role.
// listen may be empty for a host that only dials (a joining node).
// bw, if set, counts the bytes of every stream by protocol and peer.
func newHost(key crypto.PrivKey, listen []string, limits config.Limits, gater connmgr.ConnectionGater, bw metrics.Reporter) (host.Host, error) {
	rm, err := resourceManager(limits.MaxConns)
	if err != nil {
		return nil, err
	}
	cm, err := cmgr.NewConnManager(limits.ConnLow, limits.ConnHigh, cmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.SwarmOpts(swarm.WithDialRanker(quicFirst)),
		libp2p.DisableRelay(),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("swdist/" + Version),
	}
	if gater != nil {
		opts = append(opts, libp2p.ConnectionGater(gater))
	}
	if bw != nil {
		opts = append(opts, libp2p.BandwidthReporter(bw))
	}
	if len(listen) > 0 {
		opts = append(opts, libp2p.ListenAddrStrings(listen...))
	} else {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	return h, nil
}

// tcpFallback is how long after its last QUIC dial a peer that listens on
// QUIC too is dialed over TCP: long enough for a QUIC handshake on a busy
// machine, so that TCP is only what a network without UDP falls back to.
// TCP goes sooner only if every QUIC dial returns an error before then; a
// closed UDP port or filtered UDP costs the whole second.
const tcpFallback = time.Second

// quicFirst orders the dials to a peer's addresses as libp2p's default
// does (QUIC first), but holds TCP back tcpFallback behind QUIC instead
// of libp2p's 30 ms on a local network. With 30 ms, a QUIC handshake
// slowed by a busy CPU lost the race now and then, and two relays carried
// a whole package over TCP, whose losses behind a shaped uplink left that
// link at a fraction of its rate (the WAN benchmark's outliers, 22–24 s
// against 19).
func quicFirst(addrs []ma.Multiaddr) []network.AddrDelay {
	ranked := swarm.DefaultDialRanker(addrs)
	var lastQUIC, firstOther time.Duration
	hasQUIC, hasOther := false, false
	for _, a := range ranked {
		if isQUIC(a.Addr) {
			hasQUIC, lastQUIC = true, max(lastQUIC, a.Delay)
		} else if !hasOther || a.Delay < firstOther {
			hasOther, firstOther = true, a.Delay
		}
	}
	// Every other address moves by the same amount, so that the first goes
	// tcpFallback after the last QUIC dial and libp2p's spacing between
	// them stays.
	if shift := lastQUIC + tcpFallback - firstOther; hasQUIC && hasOther && shift > 0 {
		for i, a := range ranked {
			if !isQUIC(a.Addr) {
				ranked[i].Delay += shift
			}
		}
	}
	return ranked
}

func isQUIC(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_QUIC_V1)
	return err == nil
}

// resourceManager builds the resource manager from resourceLimits, scaled
// for this machine's memory only where a limit is in bytes.
func resourceManager(maxConns int) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(maxConns, limits.AutoScale())))
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}

// Streams per connection that the resource manager admits: in all, and on
// any one protocol or service (each child keeps a pubsub stream each way to
// its parent, and a fetch has at most four blocks streams in flight to its
// parent; eight to one of its few peers).
const (
	streamsPerConn      = 8
	protoStreamsPerConn = 4
)

// resourceLimits sets every connection and stream limit of every scope from
// maxConns (limits.max_conns), whatever the machine: maxConns connections in
// total and inbound, with room for that many to be in their handshake at
// once (a relay whose children all come back together); streams per
// connection as above; fixed limits for one peer. Only the byte limits come
// from defaults (libp2p's, scaled for the machine's memory), and the
// system's is raised to at least 1 MiB per connection: yamux reserves a
// 256 KiB window for every stream it opens, so a relay's idle children alone
// reserve half a MiB each.
func resourceLimits(maxConns int, defaults rcmgr.ConcreteLimitConfig) rcmgr.ConcreteLimitConfig {
	n := rcmgr.LimitVal(maxConns)
	d := defaults.ToPartialLimitConfig()
	memory := max(d.System.Memory, rcmgr.LimitVal64(maxConns)<<20)
	system := rcmgr.ResourceLimits{
		Conns: n, ConnsInbound: n, ConnsOutbound: n, FD: n,
		Streams: streamsPerConn * n, StreamsInbound: streamsPerConn * n, StreamsOutbound: streamsPerConn * n,
		Memory: memory,
	}
	shared := rcmgr.ResourceLimits{
		Streams: protoStreamsPerConn * n, StreamsInbound: protoStreamsPerConn * n, StreamsOutbound: protoStreamsPerConn * n,
	}
	onePeer := rcmgr.ResourceLimits{
		Conns: 8, ConnsInbound: 8, ConnsOutbound: 8, FD: 8, // both sides dialing, TCP and QUIC
		Streams: 1024, StreamsInbound: 512, StreamsOutbound: 512,
	}
	onePeerProto := rcmgr.ResourceLimits{Streams: 512, StreamsInbound: 256, StreamsOutbound: 256}
	partial := rcmgr.PartialLimitConfig{
		System:              system,
		Transient:           system,
		ServiceDefault:      shared,
		ProtocolDefault:     shared,
		PeerDefault:         onePeer,
		ServicePeerDefault:  onePeerProto,
		ProtocolPeerDefault: onePeerProto,
	}
	// Any per-service or per-protocol limits among the defaults (libp2p's
	// for identify and ping scale with memory) get the same as the rest.
	partial.Service, partial.Protocol = overrideAll(d.Service, shared), overrideAll(d.Protocol, shared)
	partial.ServicePeer, partial.ProtocolPeer = overrideAll(d.ServicePeer, onePeerProto), overrideAll(d.ProtocolPeer, onePeerProto)
	return partial.Build(defaults)
}

func overrideAll[K comparable](m map[K]rcmgr.ResourceLimits, l rcmgr.ResourceLimits) map[K]rcmgr.ResourceLimits {
	out := make(map[K]rcmgr.ResourceLimits, len(m))
	for k := range m {
		out[k] = l
	}
	return out
}
