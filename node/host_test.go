package node

import (
	"reflect"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/node/config"
)

// A relay or server with the default limits admits 2,000 children on any
// machine: a connection each, a pubsub stream each way, hello, reports and
// four blocks streams each during a fetch, and the yamux windows of all
// that. Checked through the limiter the host uses, at every scope a
// child's stream is counted in.
func TestResourceLimitsHoldTwoThousandChildren(t *testing.T) {
	const children = 2000
	machines := map[string]rcmgr.ConcreteLimitConfig{
		"256 MiB, 256 files": rcmgr.DefaultLimits.Scale(256<<20, 256),
		"8 GiB, 65536 files": rcmgr.DefaultLimits.Scale(1<<30, 1<<15),
		"64 GiB, 1 Mi files": rcmgr.DefaultLimits.Scale(8<<30, 1<<19),
		"this machine":       rcmgr.DefaultLimits.AutoScale(),
	}
	// libp2p's own limits for its services (identify, ping), which scale
	// with memory, are overridden too.
	withServices := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&withServices)
	machines["8 GiB, with libp2p's service limits"] = withServices.Scale(1<<30, 1<<15)
	atLeast := func(t *testing.T, what string, got, want int) {
		t.Helper()
		if got < want {
			t.Errorf("%s: %d, need at least %d", what, got, want)
		}
	}
	for _, role := range []cert.Role{cert.RoleServer, cert.RoleRelay} {
		c := config.Config{Role: string(role)}
		c.Defaults()
		var (
			first rcmgr.ConcreteLimitConfig
			seen  bool
		)
		for name, machine := range machines {
			t.Run(string(role)+" on "+name, func(t *testing.T) {
				limits := resourceLimits(c.Limits.MaxConns, machine)
				lim := rcmgr.NewFixedLimiter(limits)
				for scope, l := range map[string]rcmgr.Limit{"system": lim.GetSystemLimits(), "transient": lim.GetTransientLimits()} {
					atLeast(t, scope+" inbound connections", l.GetConnLimit(network.DirInbound), children)
					atLeast(t, scope+" connections", l.GetConnTotalLimit(), children)
					atLeast(t, scope+" file descriptors", l.GetFDLimit(), children)
					atLeast(t, scope+" inbound streams", l.GetStreamLimit(network.DirInbound), 6*children)
					atLeast(t, scope+" outbound streams", l.GetStreamLimit(network.DirOutbound), 2*children)
					atLeast(t, scope+" streams", l.GetStreamTotalLimit(), 7*children)
				}
				atLeast(t, "system memory (MiB)", int(lim.GetSystemLimits().GetMemoryLimit()>>20), children*7/4)
				// One protocol or service may use a stream of every child
				// at once, both ways, and a blocks fetch of all of them.
				for _, p := range []protocol.ID{"/meshsub/1.1.0", "/meshsub/1.2.0", member.HelloProtocol, "/swdist/blocks/1.0.0", "/ipfs/id/1.0.0"} {
					l := lim.GetProtocolLimits(p)
					atLeast(t, string(p)+" inbound streams", l.GetStreamLimit(network.DirInbound), 4*children)
					atLeast(t, string(p)+" outbound streams", l.GetStreamLimit(network.DirOutbound), children)
					atLeast(t, string(p)+" streams", l.GetStreamTotalLimit(), 4*children)
				}
				for _, svc := range []string{"libp2p.identify", "libp2p.ping", "pubsub"} {
					l := lim.GetServiceLimits(svc)
					atLeast(t, svc+" inbound streams", l.GetStreamLimit(network.DirInbound), children)
				}
				// One child: its connection while both sides dial, and its
				// streams.
				p := peer.ID("child")
				atLeast(t, "one peer's inbound connections", lim.GetPeerLimits(p).GetConnLimit(network.DirInbound), 2)
				atLeast(t, "one peer's inbound streams", lim.GetPeerLimits(p).GetStreamLimit(network.DirInbound), 16)
				atLeast(t, "one peer's inbound streams on a protocol", lim.GetProtocolPeerLimits("/swdist/blocks/1.0.0").GetStreamLimit(network.DirInbound), 8)
				// Counts do not depend on the machine; only bytes may.
				if !seen {
					first, seen = limits, true
				} else if !sameCounts(first, limits) {
					t.Errorf("connection or stream limits depend on the machine:\n%+v\n%+v", counts(first), counts(limits))
				}
			})
		}
	}
}

// sameCounts says whether a and b have the same connection, stream and
// file limits at every scope (byte limits aside).
func sameCounts(a, b rcmgr.ConcreteLimitConfig) bool {
	return reflect.DeepEqual(counts(a), counts(b))
}

func counts(c rcmgr.ConcreteLimitConfig) rcmgr.PartialLimitConfig {
	p := c.ToPartialLimitConfig()
	for _, r := range []*rcmgr.ResourceLimits{&p.System, &p.Transient, &p.AllowlistedSystem, &p.AllowlistedTransient,
		&p.ServiceDefault, &p.ServicePeerDefault, &p.ProtocolDefault, &p.ProtocolPeerDefault, &p.PeerDefault, &p.Conn, &p.Stream} {
		r.Memory = 0
	}
	p.AllowlistedSystem, p.AllowlistedTransient = rcmgr.ResourceLimits{}, rcmgr.ResourceLimits{} // no allowlist is used
	// A service or protocol of its own with the same counts as the default
	// is no difference.
	p.Service = sameAsDefault(p.Service, p.ServiceDefault)
	p.ServicePeer = sameAsDefault(p.ServicePeer, p.ServicePeerDefault)
	p.Protocol = sameAsDefault(p.Protocol, p.ProtocolDefault)
	p.ProtocolPeer = sameAsDefault(p.ProtocolPeer, p.ProtocolPeerDefault)
	p.Peer = sameAsDefault(p.Peer, p.PeerDefault)
	return p
}

// sameAsDefault drops byte limits, and the entries that are then equal to
// def.
func sameAsDefault[K comparable](m map[K]rcmgr.ResourceLimits, def rcmgr.ResourceLimits) map[K]rcmgr.ResourceLimits {
	out := map[K]rcmgr.ResourceLimits{}
	for k, r := range m {
		if r.Memory = 0; r != def {
			out[k] = r
		}
	}
	return out
}
