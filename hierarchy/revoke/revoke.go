// Package revoke spreads revocations through the tree. A managing node signs
// a revocation of a node below it; the record floods along tree links (to
// the parent and to every connected child) and is exchanged whenever a child
// links up with its parent, so every node holds it and refuses the revoked
// node, and its subtree, at hello.
package revoke

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// Protocol exchanges revocation lists between tree neighbours.
const Protocol protocol.ID = "/swdist/revocations/1.0.0"

// MaxRecords bounds the list a node keeps and accepts in one message.
const MaxRecords = 100_000

const maxMsg = MaxRecords * 256

// Store persists revocations.
type Store interface {
	AddRevocation(ctx context.Context, r cert.Revocation, s cert.Signed) error
	Revocations(ctx context.Context) ([]cert.Signed, error)
}

// Set holds the revocations this node knows.
type Set struct {
	store Store

	mu       sync.RWMutex
	byTarget map[peer.ID][]cert.Revocation
	raw      []cert.Signed
	seen     map[string]bool
}

// NewSet loads the stored revocations.
func NewSet(ctx context.Context, store Store) (*Set, error) {
	s := &Set{store: store, byTarget: map[peer.ID][]cert.Revocation{}, seen: map[string]bool{}}
	list, err := store.Revocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	for _, sg := range list {
		if r, err := cert.OpenRevocation(sg); err == nil {
			s.insert(r, sg)
		}
	}
	return s, nil
}

func (s *Set) insert(r cert.Revocation, sg cert.Signed) bool {
	key := string(sg.Body)
	if s.seen[key] {
		return false
	}
	s.seen[key] = true
	s.byTarget[r.Target] = append(s.byTarget[r.Target], r)
	s.raw = append(s.raw, sg)
	return true
}

// Add verifies and stores a signed revocation; it reports whether it was new.
func (s *Set) Add(ctx context.Context, sg cert.Signed) (bool, error) {
	r, err := cert.OpenRevocation(sg)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.seen[string(sg.Body)] {
		s.mu.Unlock()
		return false, nil
	}
	if len(s.raw) >= MaxRecords {
		s.mu.Unlock()
		return false, fmt.Errorf("revocation list full (%d records)", MaxRecords)
	}
	s.insert(r, sg)
	s.mu.Unlock()
	if err := s.store.AddRevocation(ctx, r, sg); err != nil {
		return true, fmt.Errorf("store revocation of %s: %w", r.Target, err)
	}
	return true, nil
}

// Check returns cert.ErrRevoked if any certificate of the verified chain is
// revoked by one of its ancestors. It is the Verifier's Revoked hook.
func (s *Set) Check(certs []cert.Cert) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range certs {
		for _, r := range s.byTarget[c.PeerID] {
			if r.AppliesTo(certs) {
				return fmt.Errorf("%w: %s was revoked by %s at %s", cert.ErrRevoked, r.Target, r.Revoker, r.At.Format(time.RFC3339))
			}
		}
	}
	return nil
}

// All returns every signed record.
func (s *Set) All() []cert.Signed {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]cert.Signed(nil), s.raw...)
}

type exchange struct {
	Records []cert.Signed `cbor:"0,keyasint"`
}

// Config configures a Service.
type Config struct {
	Key    crypto.PrivKey
	Set    *Set
	Member *member.Service
	// Neighbours returns the tree links to flood to: parent and children.
	Neighbours func() []peer.ID
	// OnChange runs after new revocations were added.
	OnChange func()
	Logger   *slog.Logger
}

// Service exchanges revocations with tree neighbours.
type Service struct {
	h   host.Host
	cfg Config
	log *slog.Logger
}

// New makes a Service; Start registers its protocol.
func New(h host.Host, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{h: h, cfg: cfg, log: cfg.Logger.With("svc", "revoke")}
}

// Start registers the protocol.
func (s *Service) Start() {
	s.h.SetStreamHandler(Protocol, s.cfg.Member.Guard(func(pr member.Peer, str network.Stream) {
		var added int
		_ = wire.Serve(str, maxMsg, func(req exchange) (exchange, error) {
			added = s.merge(req.Records)
			return exchange{Records: s.cfg.Set.All()}, nil
		})
		if added > 0 {
			s.changed(pr.ID)
		}
	}))
}

// Close removes the protocol.
func (s *Service) Close() { s.h.RemoveStreamHandler(Protocol) }

func (s *Service) merge(records []cert.Signed) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	added := 0
	for _, sg := range records {
		ok, err := s.cfg.Set.Add(ctx, sg)
		if err != nil {
			s.log.Warn("revocation refused", "err", err)
			continue
		}
		if ok {
			added++
		}
	}
	return added
}

func (s *Service) changed(from peer.ID) {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
	for _, p := range s.cfg.Neighbours() {
		if p != from {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := s.Sync(ctx, p); err != nil {
					s.log.Debug("pass revocations on", "peer", p, "err", err)
				}
			}()
		}
	}
}

// Sync exchanges full lists with p; new records from p are passed on.
func (s *Service) Sync(ctx context.Context, p peer.ID) error {
	str, err := s.h.NewStream(network.WithNoDial(ctx, "tree neighbours only"), p, Protocol)
	if err != nil {
		return fmt.Errorf("open revocation exchange with %s: %w", p, err)
	}
	resp, err := wire.Call[exchange, exchange](str, exchange{Records: s.cfg.Set.All()}, maxMsg)
	if err != nil {
		return fmt.Errorf("exchange revocations with %s: %w", p, err)
	}
	if s.merge(resp.Records) > 0 {
		s.changed(p)
	}
	return nil
}

// Revoke signs a revocation of target by this node and spreads it.
func (s *Service) Revoke(ctx context.Context, target peer.ID, reason string) (cert.Revocation, error) {
	r := cert.Revocation{Target: target, Revoker: s.h.ID(), At: time.Now().Truncate(time.Second), Reason: reason}
	sg, err := cert.SignRevocation(r, s.cfg.Key)
	if err != nil {
		return cert.Revocation{}, err
	}
	if _, err := s.cfg.Set.Add(ctx, sg); err != nil {
		return cert.Revocation{}, err
	}
	s.log.Info("revoked", "peer", target, "reason", reason)
	s.changed("")
	return r, nil
}
