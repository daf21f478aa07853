package node

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
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
				for _, p := range []protocol.ID{"/meshsub/1.1.0", "/meshsub/1.2.0", member.HelloProtocol, exchange.Protocol, "/ipfs/id/1.0.0"} {
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
				atLeast(t, "one peer's inbound streams on a protocol", lim.GetProtocolPeerLimits(exchange.Protocol).GetStreamLimit(network.DirInbound), 8)
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

// quicFirst keeps libp2p's delays for QUIC, and moves TCP's so that the
// first goes tcpFallback after the last QUIC dial, the others as far apart
// as libp2p had them; only when the peer has a QUIC address.
func TestQUICFirstHoldsTCPBack(t *testing.T) {
	quic1 := ma.StringCast("/ip4/10.0.0.1/udp/7400/quic-v1")
	quic2 := ma.StringCast("/ip4/10.0.0.2/udp/7400/quic-v1")
	tcp1 := ma.StringCast("/ip4/10.0.0.1/tcp/7400")
	tcp2 := ma.StringCast("/ip4/10.0.0.2/tcp/7400")
	pub := ma.StringCast("/ip4/1.2.3.4/tcp/7400")
	for _, tc := range []struct {
		name  string
		addrs []ma.Multiaddr
		want  map[string]time.Duration // by address
	}{
		{"QUIC and TCP", []ma.Multiaddr{tcp1, quic1},
			map[string]time.Duration{quic1.String(): 0, tcp1.String(): tcpFallback}},
		{"two of each", []ma.Multiaddr{tcp1, tcp2, quic1, quic2},
			map[string]time.Duration{quic1.String(): 0, quic2.String(): swarm.PrivateQUICDelay,
				tcp1.String(): swarm.PrivateQUICDelay + tcpFallback, tcp2.String(): swarm.PrivateQUICDelay + tcpFallback + swarm.PrivateTCPDelay}},
		{"TCP only", []ma.Multiaddr{tcp1, pub},
			map[string]time.Duration{tcp1.String(): 0, pub.String(): 0}},
		{"QUIC only", []ma.Multiaddr{quic1}, map[string]time.Duration{quic1.String(): 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]time.Duration{}
			for _, a := range quicFirst(tc.addrs) {
				got[a.Addr.String()] = a.Delay
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("delays (-want +got):\n%s", diff)
			}
		})
	}
}

// Two real hosts listening on TCP and QUIC end up on QUIC even when the
// QUIC handshake is slow, as on a machine busy starting many nodes, and on
// TCP where UDP does not get through. A forwarder in front of the QUIC
// listener holds every packet 50 ms each way, or drops them all, while
// TCP answers at once. With libp2p's default ranking (TCP 30 ms behind
// QUIC on a local network) TCP won the slow handshake's race.
func TestDialsPreferQUICAndFallBackToTCP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		udp      func(t *testing.T, to string) *net.UDPAddr
		wantQUIC bool
	}{
		{"slow QUIC handshake", func(t *testing.T, to string) *net.UDPAddr { return slowUDP(t, to, 50*time.Millisecond) }, true},
		{"UDP dropped", func(t *testing.T, to string) *net.UDPAddr { return slowUDP(t, to, -1) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
			limits := config.Limits{MaxConns: 16, ConnLow: 8, ConnHigh: 12}
			server, err := newHost(certtest.NewKey(t), listen, limits, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { server.Close() })
			client, err := newHost(certtest.NewKey(t), nil, limits, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { client.Close() })
			var addrs []ma.Multiaddr
			for _, a := range server.Addrs() {
				if !isQUIC(a) {
					addrs = append(addrs, a)
					continue
				}
				port, err := a.ValueForProtocol(ma.P_UDP)
				if err != nil {
					t.Fatal(err)
				}
				front := tc.udp(t, "127.0.0.1:"+port)
				addrs = append(addrs, ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", front.Port)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			began := time.Now()
			if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: addrs}); err != nil {
				t.Fatal(err)
			}
			// Over TCP a second later, not after QUIC's handshake timeout
			// (5 s): a bound with room for a loaded machine, not a timing.
			if took := time.Since(began); !tc.wantQUIC && took > 2500*time.Millisecond {
				t.Errorf("connected over TCP after %v, want about a second", took.Round(time.Millisecond))
			}
			for _, c := range client.Network().ConnsToPeer(server.ID()) {
				if isQUIC(c.RemoteMultiaddr()) != tc.wantQUIC {
					t.Errorf("connected over %s, want QUIC: %v", c.RemoteMultiaddr(), tc.wantQUIC)
				}
			}
		})
	}
}

// slowUDP forwards UDP datagrams between one client and to, holding each
// for delay in either direction, or dropping them all if delay < 0; it
// returns the address to send to.
func slowUDP(t *testing.T, to string, delay time.Duration) *net.UDPAddr {
	t.Helper()
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	target, err := net.ResolveUDPAddr("udp4", to)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp4", nil, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close(); back.Close() })
	var mu sync.Mutex
	var client *net.UDPAddr
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			mu.Unlock()
			if delay < 0 {
				continue
			}
			b := slices.Clone(buf[:n])
			time.AfterFunc(delay, func() { _, _ = back.Write(b) })
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			to := client
			mu.Unlock()
			b := slices.Clone(buf[:n])
			time.AfterFunc(delay, func() { _, _ = front.WriteToUDP(b, to) })
		}
	}()
	return front.LocalAddr().(*net.UDPAddr)
}
