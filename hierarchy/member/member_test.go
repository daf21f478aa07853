package member_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/certtest"
)

const testProto = "/swdist/test/1.0.0"

// helloTimeout is short, so that silent peers are dropped quickly, but
// leaves room for a slow machine (the race detector, a loaded CI).
const helloTimeout = 5 * time.Second

// chainFor makes a certificate chain for key: a child of parent of the
// given role, at site a, valid for an hour.
func chainFor(t *testing.T, o certtest.Org, parent certtest.Node, key crypto.PrivKey, role cert.Role) cert.Chain {
	return o.ChildWithKey(t, parent, key, role, "a").Chain
}

type member_ struct {
	h   host.Host
	key crypto.PrivKey
	svc *member.Service
	got atomic.Int32 // streams that reached the guarded test handler
}

// newHost starts a real libp2p host on loopback TCP with a gater.
func newHost(t *testing.T, key crypto.PrivKey, g *member.Gater) host.Host {
	t.Helper()
	opts := []libp2p.Option{libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay()}
	if g != nil {
		opts = append(opts, libp2p.ConnectionGater(g))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// startMember runs a member service with chain on a new host. The
// verifier decides what it accepts.
func startMember(t *testing.T, key crypto.PrivKey, chain cert.Chain, v *cert.Verifier) *member_ {
	t.Helper()
	g := member.NewGater()
	m := &member_{key: key, h: newHost(t, key, g)}
	m.svc = member.New(m.h, g, memberConfig(chain, v))
	m.svc.Start()
	t.Cleanup(m.svc.Close)
	m.h.SetStreamHandler(testProto, m.svc.Guard(func(_ member.Peer, s network.Stream) {
		m.got.Add(1)
		s.Write([]byte("ok"))
		s.Close()
	}))
	return m
}

// memberConfig is the tests' member service configuration for a node
// with chain.
func memberConfig(chain cert.Chain, v *cert.Verifier) member.Config {
	return member.Config{
		Verifier: v, Chain: func() cert.Chain { return chain }, HelloTimeout: helloTimeout,
		RecheckEvery: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// orgRoot makes an organisation and starts its root member.
func orgRoot(t *testing.T) (certtest.Org, certtest.Node, *member_) {
	t.Helper()
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	return o, rn, startMember(t, rn.Key, rn.Chain, o.V)
}

// rootAndOutsider starts an organisation's root member and connects to it
// a plain libp2p host with no certificate.
func rootAndOutsider(ctx context.Context, t *testing.T) (*member_, host.Host) {
	t.Helper()
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	root := startMember(t, rn.Key, rn.Chain, o.V)
	outsider := newHost(t, certtest.NewKey(t), nil)
	if err := connect(ctx, outsider, root.h); err != nil {
		t.Fatal(err)
	}
	return root, outsider
}

func connect(ctx context.Context, from, to host.Host) error {
	return from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()})
}

// ask opens the guarded test protocol and reads its answer.
func ask(ctx context.Context, from host.Host, to peer.ID) error {
	s, err := from.NewStream(ctx, to, testProto)
	if err != nil {
		return err
	}
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	_, err = io.ReadFull(s, buf)
	return err
}

func TestMembersVerifyEachOther(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	root := startMember(t, rn.Key, rn.Chain, o.V)
	childKey := certtest.NewKey(t)
	child := startMember(t, childKey, chainFor(t, o, rn, childKey, cert.RoleClient), o.V)

	if err := connect(ctx, child.h, root.h); err != nil {
		t.Fatal(err)
	}
	pr, err := child.svc.Wait(ctx, root.h.ID())
	if err != nil {
		t.Fatalf("child did not verify root: %v", err)
	}
	if pr.Cert.Role != cert.RoleServer {
		t.Errorf("root's role = %s", pr.Cert.Role)
	}
	pr, err = root.svc.Wait(ctx, child.h.ID())
	if err != nil {
		t.Fatalf("root did not verify child: %v", err)
	}
	if pr.Cert.Parent != root.h.ID() || len(pr.Certs) != 2 {
		t.Errorf("child's cert: parent %s, chain of %d", pr.Cert.Parent, len(pr.Certs))
	}
	// Both directions of a guarded protocol work between members.
	if err := ask(ctx, child.h, root.h.ID()); err != nil {
		t.Errorf("child → root: %v", err)
	}
	if err := ask(ctx, root.h, child.h.ID()); err != nil {
		t.Errorf("root → child: %v", err)
	}
}

// refusedCase is a peer that dials a member with a chain it must refuse.
type refusedCase struct {
	name  string
	chain func(t *testing.T, o certtest.Org, root certtest.Node, key crypto.PrivKey) cert.Chain
	want  error
}

func TestRefusedPeers(t *testing.T) {
	cases := []refusedCase{
		{"another organisation", func(t *testing.T, _ certtest.Org, _ certtest.Node, key crypto.PrivKey) cert.Chain {
			other := certtest.NewOrg(t)
			return chainFor(t, other, other.RootNode(t), key, cert.RoleClient)
		}, cert.ErrWrongOrg},
		{"expired certificate", func(t *testing.T, o certtest.Org, _ certtest.Node, key crypto.PrivKey) cert.Chain {
			// An expired root certificate in the chain.
			old := o.RootValid(t, time.Now().Add(-3*time.Hour), time.Now().Add(-2*time.Hour))
			s, err := cert.Issue(cert.Cert{PeerID: certtest.ID(t, key), Role: cert.RoleClient, Parent: old.ID, Site: "a", Org: o.V.Org,
				NotBefore: time.Now().Add(-3 * time.Hour), NotAfter: time.Now().Add(-2 * time.Hour)}, old.Key)
			if err != nil {
				t.Fatal(err)
			}
			return append(cert.Chain{s}, old.Chain...)
		}, cert.ErrExpired},
		{"certificate of another peer", func(t *testing.T, o certtest.Org, root certtest.Node, _ crypto.PrivKey) cert.Chain {
			return chainFor(t, o, root, certtest.NewKey(t), cert.RoleClient)
		}, nil},
		{"self-issued child certificate", func(t *testing.T, o certtest.Org, root certtest.Node, key crypto.PrivKey) cert.Chain {
			// Claims the root as parent, but is signed by its own key.
			s, err := cert.Issue(cert.Cert{PeerID: certtest.ID(t, key), Role: cert.RoleRelay, Parent: root.ID, Site: "a", Org: o.V.Org,
				NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}, key)
			if err != nil {
				t.Fatal(err)
			}
			return append(cert.Chain{s}, root.Chain...)
		}, cert.ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			o, rn, root := orgRoot(t)
			// The intruder runs a member service too, so it really says
			// hello, with the chain under test.
			key := certtest.NewKey(t)
			bad := startMember(t, key, tc.chain(t, o, rn, key), o.V)

			_ = connect(ctx, bad.h, root.h)
			_, err := root.svc.Wait(ctx, bad.h.ID())
			if err == nil {
				t.Fatal("root verified the intruder")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("refused with %v, want %v", err, tc.want)
			}
			if err := ask(ctx, bad.h, root.h.ID()); err == nil {
				t.Error("intruder got an answer from a guarded protocol")
			}
			waitDisconnected(t, root.h, bad.h.ID())
			// The gater refuses it for a while: a reconnect never reaches
			// the root (the dialer may believe it connected: its muxer is
			// settled inside the handshake, before the root's gater runs).
			redial(bad.h, root.h)
			assertRefusedAtRoot(t, root, bad.h.ID())
			if root.got.Load() != 0 {
				t.Errorf("guarded handler ran %d times for the intruder", root.got.Load())
			}
		})
	}
}

func waitDisconnected(t *testing.T, h host.Host, p peer.ID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.Network().Connectedness(p) == network.Connected {
		if time.Now().After(deadline) {
			t.Fatalf("%s still connected", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOutsider: a plain libp2p host, with no certificate and no hello, can
// connect at the transport level but no protocol answers it, and it is
// disconnected once the hello timeout passes.
func TestOutsider(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	root, outsider := rootAndOutsider(ctx, t)
	start := time.Now()
	if err := ask(ctx, outsider, root.h.ID()); err == nil {
		t.Fatal("outsider got an answer")
	}
	if waited := time.Since(start); waited > helloTimeout-time.Second {
		// Not a timing assertion on speed: the guard must not hold an
		// outsider's stream for the whole hello timeout.
		t.Errorf("guard held the outsider's stream for %s", waited)
	}
	waitDisconnected(t, root.h, outsider.ID())
	if _, ok := root.svc.Peer(outsider.ID()); ok {
		t.Error("outsider listed as a verified peer")
	}
	if root.got.Load() != 0 {
		t.Errorf("guarded handler ran %d times", root.got.Load())
	}
}

// TestRecheckDropsRevoked: a verified peer whose chain stops verifying
// (here: the revocation hook starts refusing it) is disconnected.
func TestRecheckDropsRevoked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := certtest.NewOrg(t)
	var revoked atomic.Value
	revoked.Store(peer.ID(""))
	v := *o.V
	v.Revoked = func(certs []cert.Cert) error {
		for _, c := range certs {
			if c.PeerID == revoked.Load().(peer.ID) {
				return cert.ErrRevoked
			}
		}
		return nil
	}
	rn := o.RootNode(t)
	root := startMember(t, rn.Key, rn.Chain, &v)
	childKey := certtest.NewKey(t)
	childID := certtest.ID(t, childKey)
	child := startMember(t, childKey, chainFor(t, o, rn, childKey, cert.RoleClient), o.V)
	if err := connect(ctx, child.h, root.h); err != nil {
		t.Fatal(err)
	}
	if _, err := root.svc.Wait(ctx, childID); err != nil {
		t.Fatal(err)
	}
	revoked.Store(childID)
	root.svc.Recheck()
	waitDisconnected(t, root.h, childID)
	waitDisconnected(t, child.h, root.h.ID())
	// The root told the child why before it cut the link: from now on its
	// gater drops the child before any hello could say so.
	if reason, ok := child.svc.RefusedBy(root.h.ID()); !ok || !strings.Contains(reason, cert.ErrRevoked.Error()) {
		t.Errorf("the child knows the root refuses it: %v, reason %q", ok, reason)
	}
	redial(child.h, root.h)
	assertRefusedAtRoot(t, root, childID)
}

// TestRefusalNoticeOnlyFromVerifiedPeers: an outsider cannot make a member
// believe its parent refuses it.
func TestRefusalNoticeOnlyFromVerifiedPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	root, outsider := rootAndOutsider(ctx, t)
	if s, err := outsider.NewStream(ctx, root.h.ID(), member.RefusalProtocol); err == nil {
		_, _ = s.Write([]byte{5, 0xa1, 0x00, 0x62, 'n', 'o'})
		_ = s.CloseWrite()
		_, _ = io.ReadAll(s)
	}
	if _, ok := root.svc.RefusedBy(outsider.ID()); ok {
		t.Error("a refusal from an unverified peer was recorded")
	}
}

// redial tries to connect once, briefly: a dial the listener's gater drops
// can leave the dialer waiting, and only the listener's view matters here.
func redial(from, to host.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = connect(ctx, from, to)
}

// assertRefusedAtRoot checks, for a second, that p has no connection to
// the root and is not verified there.
func assertRefusedAtRoot(t *testing.T, root *member_, p peer.ID) {
	t.Helper()
	for range 10 {
		if root.h.Network().Connectedness(p) == network.Connected {
			t.Fatalf("%s reconnected past the gater", p)
		}
		if _, ok := root.svc.Peer(p); ok {
			t.Fatalf("%s verified after being refused", p)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A peer that connects again while this node still holds a connection it
// dialed: if the peer was verified on that connection, it restarted or
// lost it, and the old one is closed; if its hello is not done yet, the
// second connection is a dial racing the first (QUIC and TCP at once), and
// closing the first would break the hello under way, so both stay. Here
// a second host with the same key plays the peer's second connection.
func TestPeerDialingAgain(t *testing.T) {
	for _, tc := range []struct {
		name       string
		verified   bool // the first connection's hello is done
		wantClosed bool // the root closes the first connection
	}{
		{"verified peer: old connection closed", true, true},
		{"peer still to say hello: both kept", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			o, rn, root := orgRoot(t)
			key := certtest.NewKey(t)
			var first host.Host
			if tc.verified {
				first = startMember(t, key, chainFor(t, o, rn, key, cert.RoleClient), o.V).h
			} else {
				first = newHost(t, key, nil) // connects, says no hello
			}
			if err := connect(ctx, first, root.h); err != nil {
				t.Fatal(err)
			}
			if tc.verified {
				if _, err := root.svc.Wait(ctx, first.ID()); err != nil {
					t.Fatalf("root did not verify the peer: %v", err)
				}
			}
			second := newHost(t, key, nil)
			if err := connect(ctx, second, root.h); err != nil {
				t.Fatal(err)
			}
			if tc.wantClosed {
				waitDisconnected(t, first, root.h.ID())
				return
			}
			// Well within the hello timeout, after which a silent peer is
			// dropped anyway.
			for range 10 {
				if first.Network().Connectedness(root.h.ID()) != network.Connected {
					t.Fatal("the root closed the first connection of a peer whose hello was not done")
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// A hello whose connection is cut under it is not the last word: the next
// connection is greeted and the peer verified. Here the other side closes
// the connection as soon as the hello stream opens, then becomes a member.
// Whether the failed hello's record was made before or after its
// connection's disconnect is a race, so the test tries it ten times (one
// order left the record standing, and nothing greeted again).
func TestGreetedAgainAfterHelloCutOff(t *testing.T) {
	o := certtest.NewOrg(t)
	rn := o.RootNode(t)
	key := certtest.NewKey(t)
	child := startMember(t, key, chainFor(t, o, rn, key, cert.RoleClient), o.V)
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		g := member.NewGater()
		h := newHost(t, rn.Key, g)
		h.SetStreamHandler(member.HelloProtocol, func(s network.Stream) { _ = s.Conn().Close() })
		if err := connect(ctx, child.h, h); err != nil {
			t.Fatal(err)
		}
		waitDisconnected(t, child.h, h.ID())
		svc := member.New(h, g, memberConfig(rn.Chain, o.V))
		svc.Start() // its hello handler replaces the one that cut
		if err := connect(ctx, child.h, h); err != nil {
			t.Fatal(err)
		}
		if _, err := child.svc.Wait(ctx, h.ID()); err != nil {
			t.Fatalf("try %d: not verified on the next connection: %v", i+1, err)
		}
		svc.Close()
		h.Close()
		cancel()
	}
}
