// Package member enforces membership on a libp2p host. A hello protocol
// exchanges certificate chains on every new connection and verifies them
// against the organisation root; a peer that fails, or says nothing within
// the hello timeout, is disconnected and banned for a while by the
// connection gater; and Guard keeps every other protocol closed to any peer
// that has not been verified.
package member

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/wire"
)

// HelloProtocol is the first protocol on every connection.
const HelloProtocol protocol.ID = "/swdist/hello/1.0.0"

// maxHello bounds a hello message: a chain of MaxChainLen certificates.
const maxHello = 128 << 10

// RefusalProtocol carries, from a peer that verified this node before and
// now refuses it (a revocation, an expired certificate), the reason, just
// before it disconnects: its gater will drop this node's next connections
// before any hello, so this is the only time it can say why.
const RefusalProtocol protocol.ID = "/swdist/refused/1.0.0"

// maxReason bounds the reason a refusal carries.
const maxReason = 1 << 10

type refusalMsg struct {
	Reason string `cbor:"0,keyasint"`
}

type helloMsg struct {
	Chain cert.Chain `cbor:"0,keyasint"`
}

// Peer is a connected peer whose chain verified.
type Peer struct {
	ID    peer.ID
	Cert  cert.Cert   // the peer's own certificate
	Certs []cert.Cert // its whole chain, leaf first
	Chain cert.Chain
	Since time.Time
}

// Config configures a Service.
type Config struct {
	Verifier *cert.Verifier
	// Chain returns this node's current chain; renewal may change it.
	Chain func() cert.Chain
	// HelloTimeout is how long a new peer has to prove its membership.
	HelloTimeout time.Duration
	// BanFor is how long a peer that failed hello is refused by the gater.
	BanFor time.Duration
	// RecheckEvery is how often connected peers' chains are verified again,
	// so that expired certificates are dropped.
	RecheckEvery   time.Duration
	Logger         *slog.Logger
	OnVerified     func(Peer)
	OnDisconnected func(peer.ID)
}

func (c *Config) setDefaults() {
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.BanFor == 0 {
		c.BanFor = time.Minute
	}
	if c.RecheckEvery == 0 {
		c.RecheckEvery = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Gater refuses connections from and to banned peers. It must be given to
// the host at construction (libp2p.ConnectionGater), before the Service that
// fills it exists.
type Gater struct {
	mu     sync.Mutex
	banned map[peer.ID]ban
	now    func() time.Time
	// redial, set by the Service, runs when a peer not banned has
	// secured a new inbound connection, before it is used.
	redial func(peer.ID)
}

type ban struct {
	until  time.Time
	reason error
}

// NewGater makes an empty gater.
func NewGater() *Gater { return &Gater{banned: map[peer.ID]ban{}, now: time.Now} }

// Ban refuses p until the given time, for the given reason.
func (g *Gater) Ban(p peer.ID, until time.Time, reason error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if until.After(g.banned[p].until) {
		g.banned[p] = ban{until: until, reason: reason}
	}
}

// Refusal returns why p is refused, if it is refused now.
func (g *Gater) Refusal(p peer.ID) (error, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.banned[p]
	if ok && g.now().After(b.until) {
		delete(g.banned, p)
		return nil, false
	}
	return b.reason, ok
}

// Banned reports whether p is refused now.
func (g *Gater) Banned(p peer.ID) bool {
	_, banned := g.Refusal(p)
	return banned
}

// InterceptPeerDial implements connmgr.ConnectionGater.
func (g *Gater) InterceptPeerDial(p peer.ID) bool { return !g.Banned(p) }

// InterceptAddrDial implements connmgr.ConnectionGater.
func (g *Gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept implements connmgr.ConnectionGater.
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured implements connmgr.ConnectionGater.
func (g *Gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	if g.Banned(p) {
		return false
	}
	g.mu.Lock()
	redial := g.redial
	g.mu.Unlock()
	if dir == network.DirInbound && redial != nil {
		redial(p)
	}
	return true
}

// InterceptUpgraded implements connmgr.ConnectionGater.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

type state struct {
	done     chan struct{} // closed once verified or refused
	peer     Peer
	err      error
	greeting bool // our hello is in flight
	handling int  // hellos from the peer being handled now
	verified bool // OnVerified was called: OnDisconnected is owed
}

// Service runs the hello protocol and tracks verified peers.
type Service struct {
	h      host.Host
	gater  *Gater
	cfg    Config
	log    *slog.Logger
	notify *network.NotifyBundle

	mu        sync.Mutex
	peers     map[peer.ID]*state
	refusedBy map[peer.ID]string // peers that refused this node, and why

	stop chan struct{}
	wg   sync.WaitGroup
}

// New makes a Service for h; Start begins enforcing.
func New(h host.Host, g *Gater, cfg Config) *Service {
	cfg.setDefaults()
	return &Service{h: h, gater: g, cfg: cfg, log: cfg.Logger.With("svc", "member"),
		peers: map[peer.ID]*state{}, refusedBy: map[peer.ID]string{}, stop: make(chan struct{})}
}

// Start registers the hello protocol and watches connections. Connections
// that exist already are greeted too.
func (s *Service) Start() {
	s.h.SetStreamHandler(HelloProtocol, s.handleHello)
	s.h.SetStreamHandler(RefusalProtocol, s.Guard(s.handleRefusal))
	s.gater.mu.Lock()
	s.gater.redial = s.dropStale
	s.gater.mu.Unlock()
	s.notify = &network.NotifyBundle{ConnectedF: s.connected, DisconnectedF: s.disconnected}
	s.h.Network().Notify(s.notify)
	for _, c := range s.h.Network().Conns() {
		s.connected(s.h.Network(), c)
	}
	s.wg.Add(1)
	go s.recheckLoop()
}

// Close stops enforcing; it does not close the host.
func (s *Service) Close() {
	close(s.stop)
	s.gater.mu.Lock()
	s.gater.redial = nil
	s.gater.mu.Unlock()
	s.h.Network().StopNotify(s.notify)
	s.h.RemoveStreamHandler(HelloProtocol)
	s.h.RemoveStreamHandler(RefusalProtocol)
	s.wg.Wait()
}

func (s *Service) entry(p peer.ID) *state {
	st, ok := s.peers[p]
	if !ok {
		st = &state{done: make(chan struct{})}
		s.peers[p] = st
	}
	return st
}

func settled(st *state) bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

func (s *Service) connected(_ network.Network, c network.Conn) {
	p := c.RemotePeer()
	s.mu.Lock()
	st := s.entry(p)
	if settled(st) && st.err != nil && !s.gater.Banned(p) {
		// A hello that failed (its connection closed under it) is not
		// the last word on a new connection: start afresh, so that this
		// one is greeted and waiters wait for its outcome.
		st = &state{done: make(chan struct{})}
		s.peers[p] = st
	}
	greet := c.Stat().Direction == network.DirOutbound && !st.greeting && !settled(st)
	if greet {
		st.greeting = true
	}
	s.mu.Unlock()
	if greet {
		go s.greet(p)
	}
	time.AfterFunc(s.cfg.HelloTimeout, func() {
		s.mu.Lock()
		st, ok := s.peers[p]
		silent := ok && !settled(st)
		s.mu.Unlock()
		if silent && s.h.Network().Connectedness(p) == network.Connected {
			s.log.Info("disconnecting peer that did not prove membership", "peer", p, "after", s.cfg.HelloTimeout)
			_ = s.h.Network().ClosePeer(p)
		}
	})
}

func (s *Service) disconnected(n network.Network, c network.Conn) {
	p := c.RemotePeer()
	if len(n.ConnsToPeer(p)) > 0 {
		return
	}
	s.mu.Lock()
	st, ok := s.peers[p]
	delete(s.peers, p)
	wasVerified := ok && st.verified
	if ok && !settled(st) {
		// Release anyone waiting on a hello that will not come now.
		st.err = fmt.Errorf("peer %s disconnected before its hello completed", p)
		close(st.done)
	}
	s.mu.Unlock()
	if wasVerified && s.cfg.OnDisconnected != nil {
		s.cfg.OnDisconnected(p)
	}
}

// greet sends our chain to p and verifies the one it answers with.
func (s *Service) greet(p peer.ID) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HelloTimeout)
	defer cancel()
	str, err := s.h.NewStream(ctx, p, HelloProtocol)
	if err != nil {
		s.greetFailed(p, fmt.Errorf("open hello stream: %w", err))
		return
	}
	resp, err := wire.Call[helloMsg, helloMsg](str, helloMsg{Chain: s.cfg.Chain()}, maxHello)
	if err != nil {
		if str.Conn().IsClosed() && s.h.Network().Connectedness(p) == network.Connected {
			// The connection this hello went on closed under it while
			// a newer one is up (the peer came back at once): greet on
			// that one, rather than record the old one's failure for it.
			s.log.Debug("hello's connection closed; greeting again on the newer one", "peer", p, "err", err)
			go s.greet(p)
			return
		}
		s.greetFailed(p, fmt.Errorf("hello: %w", err))
		return
	}
	s.mu.Lock()
	delete(s.refusedBy, p) // it accepts this node now
	s.mu.Unlock()
	pr, err := s.verify(p, resp.Chain)
	s.settle(p, pr, err, true)
}

// greetFailed handles a hello that did not complete: the stream broke, or
// the peer refused this node. A peer not yet verified is disconnected but
// not banned (a refusal says something about this node's certificate, not
// the peer's); one verified before keeps its standing.
func (s *Service) greetFailed(p peer.ID, err error) {
	s.mu.Lock()
	st, ok := s.peers[p]
	if !ok {
		// Disconnected meanwhile: nothing to settle, and a record made
		// now would outlive the connections it was about.
		s.mu.Unlock()
		return
	}
	st.greeting = false
	already := settled(st)
	s.mu.Unlock()
	if already {
		s.log.Debug("hello to verified peer failed", "peer", p, "err", err)
		return
	}
	s.settle(p, Peer{}, err, false)
}

// tellRefusal sends p the reason it is refused, over the connection it
// still has.
func (s *Service) tellRefusal(p peer.ID, reason error) {
	ctx, cancel := context.WithTimeout(context.Background(), refuseTell)
	defer cancel()
	str, err := s.h.NewStream(network.WithNoDial(ctx, "refusal"), p, RefusalProtocol)
	if err != nil {
		s.log.Debug("tell refused peer why", "peer", p, "err", err)
		return
	}
	defer str.Close()
	_ = str.SetDeadline(time.Now().Add(refuseTell))
	text := reason.Error()
	if len(text) > maxReason/2 {
		text = text[:maxReason/2]
	}
	if err := wire.Write(str, refusalMsg{Reason: text}); err != nil {
		_ = str.Reset()
		return
	}
	_ = str.CloseWrite()
	// Wait for the peer to close its side: it has read the reason.
	_, _ = str.Read(make([]byte, 1))
}

// handleRefusal records why a verified peer refuses this node from now on.
func (s *Service) handleRefusal(pr Peer, str network.Stream) {
	defer str.Close()
	_ = str.SetDeadline(time.Now().Add(refuseTell))
	var m refusalMsg
	if err := wire.Read(str, maxReason, &m); err != nil {
		_ = str.Reset()
		return
	}
	s.mu.Lock()
	s.refusedBy[pr.ID] = m.Reason
	s.mu.Unlock()
	s.log.Warn("peer refuses this node", "peer", pr.ID, "reason", m.Reason)
}

// RefusedBy says why p last refused this node, if it did and has not
// accepted it since.
func (s *Service) RefusedBy(p peer.ID) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refusedBy[p]
	return r, ok
}

func (s *Service) handleHello(str network.Stream) {
	p := str.Conn().RemotePeer()
	s.mu.Lock()
	st := s.entry(p)
	st.handling++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		st.handling-- // this entry's, even if a new one replaced it
		s.mu.Unlock()
	}()
	var refused error
	_ = wire.Serve(str, maxHello, func(req helloMsg) (helloMsg, error) {
		pr, err := s.verify(p, req.Chain)
		if err != nil {
			refused = err
			return helloMsg{}, fmt.Errorf("membership refused: %v", err)
		}
		s.settle(p, pr, nil, false)
		return helloMsg{Chain: s.cfg.Chain()}, nil
	})
	if refused != nil {
		s.settle(p, Peer{}, refused, true)
	}
}

// dropStale closes the connections p dialed to this node before the one it
// is dialing now (secured, not yet in use). A peer that dials again while
// this node still holds a connection it dialed has lost that one: it
// restarted, or its link broke without a close (a killed process's QUIC
// connection lingers here until its idle timeout). Left open, the stale
// connection would keep streams such as gossip's, and what is sent on them
// would be lost until it timed out; closed before the new connection
// carries anything, no protocol mixes the two. Connections this node
// dialed are left alone, so that two peers dialing each other at once do
// not close both. So are those of a peer not verified yet: a second
// connection before its first hello is done is a dial racing another (QUIC
// and TCP at once), not a restart, and closing the first would break the
// hello on it; the peer's side then gave up on this node while this node
// waited for a hello, and the two refused each other's streams until the
// hello timeout.
func (s *Service) dropStale(p peer.ID) {
	s.mu.Lock()
	st, ok := s.peers[p]
	verified := ok && settled(st) && st.err == nil
	s.mu.Unlock()
	if !verified {
		return
	}
	for _, old := range s.h.Network().ConnsToPeer(p) {
		if old.Stat().Direction != network.DirInbound {
			continue
		}
		s.log.Info("peer dialed again: closing its older connection", "peer", p, "opened", old.Stat().Opened)
		_ = old.Close()
	}
}

func (s *Service) verify(p peer.ID, ch cert.Chain) (Peer, error) {
	certs, err := s.cfg.Verifier.Verify(ch)
	if err != nil {
		return Peer{}, err
	}
	if certs[0].PeerID != p {
		return Peer{}, fmt.Errorf("certificate is for %s, the connection is from %s", certs[0].PeerID, p)
	}
	return Peer{ID: p, Cert: certs[0], Certs: certs, Chain: ch, Since: time.Now()}, nil
}

// settle records the outcome of a hello with p. A refused peer is
// disconnected, and banned if ban is set (its chain failed verification);
// a verified one is announced. A peer verified before that says hello again
// (after renewing its certificate) has its record replaced. A peer that
// disconnected meanwhile gets no record (one made now would outlive its
// connections, and no disconnect would undo its announcement); a chain
// that failed is banned all the same.
func (s *Service) settle(p peer.ID, pr Peer, err error, ban bool) {
	s.mu.Lock()
	st, ok := s.peers[p]
	if !ok {
		s.mu.Unlock()
		if err != nil && ban {
			s.refuse(p, err, true, false)
		}
		return
	}
	st.greeting = false
	already := settled(st)
	tell := false
	switch {
	case already && st.err != nil:
		s.mu.Unlock()
		return
	case already && err == nil:
		pr.Since = st.peer.Since
		st.peer = pr
		s.mu.Unlock()
		return
	case !already:
		st.peer, st.err = pr, err
		st.verified = err == nil
		close(st.done)
	default: // already verified, now refused: it does not know
		st.err = err
		tell = true
	}
	s.mu.Unlock()
	if err != nil {
		s.refuse(p, err, ban, tell)
		return
	}
	s.log.Debug("peer verified", "peer", p, "role", pr.Cert.Role, "site", pr.Cert.Site)
	if s.cfg.OnVerified != nil {
		s.cfg.OnVerified(pr)
	}
}

func (s *Service) refuse(p peer.ID, err error, ban, tell bool) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if !ban {
		s.log.Info("hello failed; disconnecting", "peer", p, "err", err)
		_ = s.h.Network().ClosePeer(p)
		return
	}
	s.log.Warn("peer refused", "peer", p, "reason", err)
	s.gater.Ban(p, time.Now().Add(s.cfg.BanFor), err)
	if tell {
		// A peer verified before learned nothing from a hello: say why on
		// a stream of its own, then close.
		go func() {
			s.tellRefusal(p, err)
			_ = s.h.Network().ClosePeer(p)
		}()
		return
	}
	// Close a moment later, so that the refusal's reason reaches the peer
	// (its operator needs it); the gater refuses new streams' connections
	// at once, and guarded protocols refuse it already.
	time.AfterFunc(refuseLinger, func() { _ = s.h.Network().ClosePeer(p) })
}

// refuseLinger is how long a refused peer's connection stays open so that
// the reason for the refusal can be read.
const refuseLinger = 500 * time.Millisecond

// refuseTell bounds telling a peer verified before why it is now refused.
const refuseTell = 5 * time.Second

// Wait blocks until p is verified or refused, or ctx ends. For a peer that
// is neither connected nor being greeted it answers at once: refused (and
// why), or not connected.
func (s *Service) Wait(ctx context.Context, p peer.ID) (Peer, error) {
	s.mu.Lock()
	st, ok := s.peers[p]
	if !ok {
		if reason, banned := s.gater.Refusal(p); banned {
			s.mu.Unlock()
			return Peer{}, reason
		}
		if s.h.Network().Connectedness(p) != network.Connected {
			s.mu.Unlock()
			return Peer{}, fmt.Errorf("peer %s is not connected", p)
		}
		st = s.entry(p)
	}
	s.mu.Unlock()
	select {
	case <-st.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return st.peer, st.err
	case <-ctx.Done():
		return Peer{}, fmt.Errorf("peer %s not verified: %w", p, ctx.Err())
	}
}

// Peer returns p's record if it is connected and verified.
func (s *Service) Peer(p peer.ID) (Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.peers[p]
	if !ok || !settled(st) || st.err != nil {
		return Peer{}, false
	}
	return st.peer, true
}

// Peers lists the connected, verified peers.
func (s *Service) Peers() []Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Peer
	for _, st := range s.peers {
		if settled(st) && st.err == nil {
			out = append(out, st.peer)
		}
	}
	return out
}

// guardGrace is how long Guard waits for a peer's hello to begin. A member
// always has its hello under way before it uses another protocol; only the
// answer may still be on its way.
const guardGrace = time.Second

// Guard wraps a handler so that it runs only for verified peers; streams
// from anyone else are reset. A stream that races its peer's hello waits
// for the hello while one is under way.
func (s *Service) Guard(h func(Peer, network.Stream)) network.StreamHandler {
	return func(str network.Stream) {
		p := str.Conn().RemotePeer()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HelloTimeout)
		defer cancel()
		pr, err := s.waitGuarded(ctx, p)
		if err != nil {
			_ = str.Reset()
			return
		}
		h(pr, str)
	}
}

func (s *Service) waitGuarded(ctx context.Context, p peer.ID) (Peer, error) {
	for {
		gctx, cancel := context.WithTimeout(ctx, guardGrace)
		pr, err := s.Wait(gctx, p)
		cancel()
		if err == nil || ctx.Err() != nil || gctx.Err() == nil {
			return pr, err // verified, refused, or out of time
		}
		s.mu.Lock()
		st, ok := s.peers[p]
		underway := ok && (st.greeting || st.handling > 0)
		s.mu.Unlock()
		if !underway {
			return Peer{}, fmt.Errorf("peer %s has not said hello", p)
		}
	}
}

// Reannounce sends this node's current chain to every verified peer, so
// that they hold its renewed certificate.
func (s *Service) Reannounce() {
	for _, pr := range s.Peers() {
		s.mu.Lock()
		st := s.entry(pr.ID)
		st.greeting = true
		s.mu.Unlock()
		go s.greet(pr.ID)
	}
}

// Recheck verifies every connected peer's chain again (after a revocation,
// or as time passes) and disconnects those that no longer pass.
func (s *Service) Recheck() {
	for _, pr := range s.Peers() {
		if _, err := s.cfg.Verifier.Verify(pr.Chain); err != nil {
			s.settle(pr.ID, Peer{}, err, true)
		}
	}
}

func (s *Service) recheckLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.RecheckEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Recheck()
		}
	}
}
