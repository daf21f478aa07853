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
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

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

// resourceManager admits maxConns connections in total and inbound, with
// room for that many connections to be in their handshake at once (a relay
// whose children all come back together) and eight streams per connection.
func resourceManager(maxConns int) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	n := rcmgr.LimitVal(maxConns)
	conns := rcmgr.ResourceLimits{
		Conns: n, ConnsInbound: n, ConnsOutbound: n, FD: n,
		Streams: 8 * n, StreamsInbound: 8 * n, StreamsOutbound: 8 * n,
	}
	partial := rcmgr.PartialLimitConfig{System: conns, Transient: conns}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(partial.Build(limits.AutoScale())))
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}
