package gossip

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
)

// Topic is the gossipsub topic of the subtree rooted at p: p publishes, its
// children subscribe.
func Topic(p peer.ID) string { return "/swdist/jobs/1/" + p.String() }

// Store keeps manifests durably.
type Store interface {
	// PutManifest stores v unless a manifest of the same job is held
	// (added false). A different job under the same administrator and
	// sequence number is ErrReplayed. expired marks a job this node got
	// only after it expired: held to say so, never run.
	PutManifest(ctx context.Context, v Verified, targeted, expired bool) (added bool, err error)
	// ManifestsAfter returns stored manifests in arrival order after the
	// local cursor, at most limit, with the cursor of each; expired ones
	// are included for a while, so returning children learn what they
	// missed.
	ManifestsAfter(ctx context.Context, after int64, limit int) ([]Stored, error)
	SyncCursor(ctx context.Context, parent peer.ID) (int64, error)
	SetSyncCursor(ctx context.Context, parent peer.ID, cursor int64) error
}

// Stored is a manifest as a node holds it.
type Stored struct {
	Cursor int64  `cbor:"0,keyasint"`
	Raw    []byte `cbor:"1,keyasint"`
}

// Config configures a Service.
type Config struct {
	Verifier *cert.Verifier
	// Self returns this node's verified chain, leaf first.
	Self   func() []cert.Cert
	Parent peer.ID // empty on the root
	Member *member.Service
	Store  Store
	// OnAccepted runs for each new manifest this node holds; targeted says
	// whether it is for this node itself.
	OnAccepted func(v Verified, targeted bool)
	// OnExpired runs for a manifest for this node that reached it only
	// after it expired (once, when first recorded).
	OnExpired func(v Verified)
	// Below, if set, says whether a node below this one may be a target
	// of v (true when it cannot tell, such as a child relay whose subtree
	// it cannot see). A relay neither keeps nor passes on a manifest for
	// nobody below it, nor for itself.
	Below  func(ctx context.Context, v Verified) bool
	Logger *slog.Logger
}

// Service carries manifests: it validates what comes from the parent's
// topic, stores it, and passes it into this node's own topic.
type Service struct {
	h    host.Host
	cfg  Config
	log  *slog.Logger
	ps   *pubsub.PubSub
	own  *pubsub.Topic // nil on a client
	up   *pubsub.Topic // nil on the root
	sub  *pubsub.Subscription
	self peer.ID

	traffic counter

	mu       sync.Mutex
	rejected map[string]int
}

// New starts gossipsub on h and joins the topics of this node's place.
func New(ctx context.Context, h host.Host, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{h: h, cfg: cfg, log: cfg.Logger.With("svc", "gossip"), self: h.ID(), rejected: map[string]int{}}
	ps, err := pubsub.NewGossipSub(ctx, h,
		// The root of each topic is its only publisher and is connected to
		// every subscriber: flooding reaches all of them in one hop.
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithValidateQueueSize(1024),
		// Manifests carry their own signatures; pubsub's would add nothing.
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pb.Message) string { sum := sha256.Sum256(m.Data); return string(sum[:]) }),
		pubsub.WithPeerFilter(s.allowPeer),
		pubsub.WithRawTracer(&s.traffic),
	)
	if err != nil {
		return nil, fmt.Errorf("start gossipsub: %w", err)
	}
	s.ps = ps
	if cfg.Self()[0].Role.CanIssue() {
		if s.own, err = ps.Join(Topic(s.self)); err != nil {
			return nil, fmt.Errorf("join own topic: %w", err)
		}
		// Only this node publishes on its own topic.
		if err := ps.RegisterTopicValidator(Topic(s.self), func(_ context.Context, from peer.ID, _ *pubsub.Message) pubsub.ValidationResult {
			if from != s.self {
				return pubsub.ValidationReject
			}
			return pubsub.ValidationAccept
		}); err != nil {
			return nil, err
		}
	}
	if cfg.Parent != "" {
		if err := ps.RegisterTopicValidator(Topic(cfg.Parent), s.validate, pubsub.WithValidatorTimeout(30*time.Second)); err != nil {
			return nil, err
		}
		if s.up, err = ps.Join(Topic(cfg.Parent)); err != nil {
			return nil, fmt.Errorf("join parent's topic: %w", err)
		}
		if s.sub, err = s.up.Subscribe(); err != nil {
			return nil, fmt.Errorf("subscribe to parent's topic: %w", err)
		}
		go s.drain(ctx)
	}
	return s, nil
}

// allowPeer admits into a topic only the tree link it belongs to: the
// parent on the parent's topic, this node's children on its own. Nobody
// else, member or not, takes part.
func (s *Service) allowPeer(p peer.ID, topic string) bool {
	pr, ok := s.cfg.Member.Peer(p)
	if !ok {
		return false
	}
	switch topic {
	case Topic(s.self):
		return pr.Cert.Parent == s.self
	case Topic(s.cfg.Parent):
		return p == s.cfg.Parent
	}
	return false
}

// drain consumes the subscription; the work happens in the validator.
func (s *Service) drain(ctx context.Context) {
	for {
		if _, err := s.sub.Next(ctx); err != nil {
			return
		}
	}
}

func (s *Service) validate(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from != s.cfg.Parent {
		s.count("not from the parent", fmt.Errorf("manifest forwarded by %s", from))
		return pubsub.ValidationReject
	}
	switch _, err := s.Accept(ctx, m.Data); {
	case err == nil:
		return pubsub.ValidationAccept
	case errors.Is(err, errDuplicate), errors.Is(err, errNotForMe):
		return pubsub.ValidationIgnore
	default:
		return pubsub.ValidationReject
	}
}

var (
	errDuplicate = errors.New("already held")
	errNotForMe  = errors.New("not for this node")
)

// Submit is Accept for a manifest an administrator submits on this node: it
// is kept and sent into this node's subtree even if nobody there is a
// target yet (its status says so).
func (s *Service) Submit(ctx context.Context, raw []byte) (Verified, error) {
	return s.accept(ctx, raw, true)
}

// Accept runs the checks every node makes on a manifest from its parent,
// stores it, and passes it on into this node's subtree. Every refusal is
// counted and logged with its reason.
func (s *Service) Accept(ctx context.Context, raw []byte) (Verified, error) {
	return s.accept(ctx, raw, false)
}

func (s *Service) accept(ctx context.Context, raw []byte, submitted bool) (Verified, error) {
	sg, err := Decode(raw)
	if err != nil {
		return Verified{}, s.count(reason(err), err)
	}
	v, err := Open(s.cfg.Verifier, sg, time.Now())
	expired := errors.Is(err, ErrExpired)
	if err != nil && !expired {
		return Verified{}, s.count(reason(err), err)
	}
	chain := s.cfg.Self()
	covers := v.ScopeCovers(chain)
	if expired {
		// Never passed on; a node it targets keeps it as expired, not run,
		// so that its status says so. Counted first, so that whoever sees
		// it stored also sees it counted.
		cerr := s.count(reason(err), err)
		if covers && v.Target.Matches(chain) {
			if added, perr := s.cfg.Store.PutManifest(ctx, v, true, true); perr == nil && added {
				s.log.Warn("job expired before it reached this node: it will not run", "job", v.JobID, "expired_at", v.ExpiresAt)
				if s.cfg.OnExpired != nil {
					s.cfg.OnExpired(v)
				}
			}
		}
		return Verified{}, cerr
	}
	if !covers && !v.ScopeBelow(s.self) {
		return Verified{}, s.count(reason(ErrOutOfScope), fmt.Errorf("job %s by admin %q of %s: %w", v.JobID, v.Admin.Name, v.Admin.Scope, ErrOutOfScope))
	}
	targeted := covers && v.Target.Matches(chain)
	relay := s.own != nil
	if !targeted && !relay {
		return v, errNotForMe // a client keeps only what is for itself
	}
	if !targeted && !submitted && s.cfg.Below != nil && !s.cfg.Below(ctx, v) {
		s.log.Debug("manifest for nobody in this subtree: not kept, not passed on", "job", v.JobID, "target", v.Target.String())
		return v, errNotForMe
	}
	added, err := s.cfg.Store.PutManifest(ctx, v, targeted, false)
	if err != nil {
		if errors.Is(err, ErrReplayed) {
			return Verified{}, s.count(reason(ErrReplayed), fmt.Errorf("job %s: %w", v.JobID, err))
		}
		s.log.Error("store manifest", "job", v.JobID, "err", err)
		return Verified{}, err
	}
	if !added {
		return v, errDuplicate
	}
	s.log.Info("manifest accepted", "job", v.JobID, "type", v.Type, "admin", v.Admin.Name, "target", v.Target.String(), "for_me", targeted)
	if relay {
		// Stored first: a restart between here and the publish loses
		// nothing, since children catch up by sync.
		if err := s.own.Publish(ctx, v.Raw); err != nil {
			s.log.Warn("pass manifest on", "job", v.JobID, "err", err)
		}
	}
	if s.cfg.OnAccepted != nil {
		s.cfg.OnAccepted(v, targeted)
	}
	return v, nil
}

func reason(err error) string {
	for _, r := range []error{ErrOversized, ErrMalformed, ErrSignature, ErrUnknownAdm, ErrOutOfScope, ErrExpired, ErrReplayed} {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return "other"
}

func (s *Service) count(why string, err error) error {
	s.mu.Lock()
	s.rejected[why]++
	s.mu.Unlock()
	s.log.Warn("manifest rejected", "reason", why, "err", err)
	return err
}

// Rejected returns the count of rejected manifests by reason.
func (s *Service) Rejected() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.rejected)
}

// Close leaves the topics.
func (s *Service) Close() {
	if s.sub != nil {
		s.sub.Cancel()
	}
	for _, t := range []*pubsub.Topic{s.up, s.own} {
		if t != nil {
			_ = t.Close()
		}
	}
}
