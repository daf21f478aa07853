// Package enroll issues membership certificates. A managing node (the root
// or any relay) mints one-time join tokens, redeems them for new children
// over the enroll protocol, and renews its children's certificates; a new
// node joins with a token, and every node renews its own certificate before
// it expires.
package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// The protocols. Enroll is the only swdist protocol that answers a peer
// without a certificate: it must hold a valid token.
const (
	EnrollProtocol protocol.ID = "/swdist/enroll/1.0.0"
	RenewProtocol  protocol.ID = "/swdist/renew/1.0.0"
)

const (
	maxRequest  = 16 << 10
	maxResponse = 128 << 10
	// maxEnrolling bounds concurrent enrollments, which anyone can attempt.
	maxEnrolling = 64
)

// ErrTokenUsed is returned by a TokenStore for a nonce seen before.
var ErrTokenUsed = errors.New("join token already used")

// TokenStore remembers which tokens have been redeemed.
type TokenStore interface {
	// UseToken records nonce as redeemed by p, or returns ErrTokenUsed.
	UseToken(ctx context.Context, nonce []byte, by peer.ID, expires time.Time) error
}

type enrollReq struct {
	Token string `cbor:"0,keyasint"`
}

type enrollResp struct {
	Chain cert.Chain `cbor:"0,keyasint"`
	Root  []byte     `cbor:"1,keyasint"` // organisation root public key, libp2p encoding
}

type renewReq struct{}

type renewResp struct {
	Chain cert.Chain `cbor:"0,keyasint"`
}

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	Key      crypto.PrivKey // this node's libp2p key
	Chain    func() cert.Chain
	Verifier *cert.Verifier
	Tokens   TokenStore
	Member   *member.Service
	// Lifetime of the certificates issued; clamped to this node's own.
	Lifetime time.Duration
	// OnIssued is called after a child's certificate is issued or renewed.
	OnIssued func(c cert.Cert, addrs []ma.Multiaddr)
	Logger   *slog.Logger
}

// DefaultLifetime is the validity of a certificate when none is configured.
const DefaultLifetime = 30 * 24 * time.Hour

func (c *IssuerConfig) setDefaults() {
	if c.Lifetime == 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Issuer enrolls and renews this node's children.
type Issuer struct {
	h   host.Host
	cfg IssuerConfig
	log *slog.Logger
	sem chan struct{}
}

// NewIssuer makes an issuer for h; Start registers its protocols.
func NewIssuer(h host.Host, cfg IssuerConfig) *Issuer {
	cfg.setDefaults()
	return &Issuer{h: h, cfg: cfg, log: cfg.Logger.With("svc", "enroll"), sem: make(chan struct{}, maxEnrolling)}
}

// Start registers the enroll and renew protocols.
func (i *Issuer) Start() {
	i.h.SetStreamHandler(EnrollProtocol, i.handleEnroll)
	i.h.SetStreamHandler(RenewProtocol, i.cfg.Member.Guard(i.handleRenew))
}

// Close removes the protocols.
func (i *Issuer) Close() {
	i.h.RemoveStreamHandler(EnrollProtocol)
	i.h.RemoveStreamHandler(RenewProtocol)
}

func (i *Issuer) self() ([]cert.Cert, error) {
	return i.cfg.Verifier.Verify(i.cfg.Chain())
}

// MintToken signs a join token for a new child of parent, which must be
// this node or a relay below it; parentAddrs are where the joiner dials.
func (i *Issuer) MintToken(t cert.Token, ttl time.Duration) (string, cert.Token, error) {
	self, err := i.self()
	if err != nil {
		return "", cert.Token{}, fmt.Errorf("this node's own certificate: %w", err)
	}
	if ttl <= 0 {
		return "", cert.Token{}, fmt.Errorf("token lifetime %s: must be positive", ttl)
	}
	t.Org = self[0].Org
	t.Issuer = i.h.ID()
	t.Nonce = cert.NewNonce()
	t.ExpiresAt = time.Now().Add(ttl).Truncate(time.Second)
	text, err := t.Sign(i.cfg.Key)
	return text, t, err
}

func (i *Issuer) issue(p peer.ID, role cert.Role, site string, groups []string) (cert.Chain, cert.Cert, error) {
	own := i.cfg.Chain()
	self, err := i.cfg.Verifier.Verify(own)
	if err != nil {
		return nil, cert.Cert{}, fmt.Errorf("this node's own certificate: %w", err)
	}
	if len(own) >= cert.MaxChainLen {
		return nil, cert.Cert{}, fmt.Errorf("tree is already %d levels deep", cert.MaxChainLen)
	}
	limit, _ := own.NotAfter()
	now := time.Now()
	c := cert.Cert{PeerID: p, Role: role, Parent: i.h.ID(), Site: site, Groups: groups,
		Org: self[0].Org, NotBefore: now.Add(-cert.ClockSkew).Truncate(time.Second),
		NotAfter: now.Add(i.cfg.Lifetime).Truncate(time.Second), Serial: rand.Uint64()}
	if c.NotAfter.After(limit) {
		c.NotAfter = limit
	}
	signed, err := cert.Issue(c, i.cfg.Key)
	if err != nil {
		return nil, cert.Cert{}, err
	}
	return append(cert.Chain{signed}, own...), c, nil
}

func (i *Issuer) handleEnroll(s network.Stream) {
	select {
	case i.sem <- struct{}{}:
		defer func() { <-i.sem }()
	default:
		i.log.Warn("enrollment refused: too many at once", "peer", s.Conn().RemotePeer())
		_ = s.Reset()
		return
	}
	p := s.Conn().RemotePeer()
	err := wire.Serve(s, maxRequest, func(req enrollReq) (enrollResp, error) {
		tok, err := cert.ParseToken(req.Token)
		if err != nil {
			return enrollResp{}, err
		}
		self, err := i.self()
		if err != nil {
			return enrollResp{}, errors.New("parent cannot enroll now: its own certificate is not valid")
		}
		if err := tok.CheckFor(self, time.Now()); err != nil {
			return enrollResp{}, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := i.cfg.Tokens.UseToken(ctx, tok.Nonce, p, tok.ExpiresAt); err != nil {
			if errors.Is(err, ErrTokenUsed) {
				return enrollResp{}, fmt.Errorf("%w: each token enrolls one node; create a new one with 'swdist token create'", ErrTokenUsed)
			}
			i.log.Error("record token", "err", err)
			return enrollResp{}, errors.New("parent could not record the token; try again")
		}
		chain, c, err := i.issue(p, tok.Role, tok.Site, tok.Groups)
		if err != nil {
			i.log.Error("issue certificate", "peer", p, "err", err)
			return enrollResp{}, errors.New("parent could not issue a certificate")
		}
		root, err := crypto.MarshalPublicKey(i.cfg.Verifier.Root)
		if err != nil {
			return enrollResp{}, err
		}
		i.log.Info("enrolled", "peer", p, "role", c.Role, "site", c.Site, "groups", c.Groups)
		if i.cfg.OnIssued != nil {
			i.cfg.OnIssued(c, i.h.Peerstore().Addrs(p))
		}
		return enrollResp{Chain: chain, Root: root}, nil
	})
	if err != nil {
		i.log.Warn("enrollment refused", "peer", p, "reason", err)
	}
}

func (i *Issuer) handleRenew(pr member.Peer, s network.Stream) {
	err := wire.Serve(s, maxRequest, func(renewReq) (renewResp, error) {
		if pr.Cert.Parent != i.h.ID() {
			return renewResp{}, fmt.Errorf("%s is not a child of this node", pr.ID)
		}
		chain, c, err := i.issue(pr.ID, pr.Cert.Role, pr.Cert.Site, pr.Cert.Groups)
		if err != nil {
			i.log.Error("renew certificate", "peer", pr.ID, "err", err)
			return renewResp{}, errors.New("parent could not renew the certificate")
		}
		i.log.Debug("renewed", "peer", pr.ID, "not_after", c.NotAfter)
		if i.cfg.OnIssued != nil {
			i.cfg.OnIssued(c, i.h.Peerstore().Addrs(pr.ID))
		}
		return renewResp{Chain: chain}, nil
	})
	if err != nil {
		i.log.Warn("renewal refused", "peer", pr.ID, "reason", err)
	}
}

// Joined is what a new node receives at enrollment.
type Joined struct {
	Chain cert.Chain
	Cert  cert.Cert
	Root  crypto.PubKey
	Token cert.Token
}

// Join redeems a token at its parent with host h (whose key becomes the
// node's identity) and checks what the parent answers: the organisation
// must be the token's and the chain must verify and name h.
func Join(ctx context.Context, h host.Host, tokenText string) (Joined, error) {
	tok, err := cert.ParseToken(tokenText)
	if err != nil {
		return Joined{}, err
	}
	if time.Now().After(tok.ExpiresAt) {
		return Joined{}, fmt.Errorf("%w: it expired at %s; create a new one with 'swdist token create'", cert.ErrToken, tok.ExpiresAt.Format(time.RFC3339))
	}
	// A connection that breaks is tried again a few times: the parent
	// gives the same node its certificate again if the first answer was
	// lost; a refusal is final.
	var resp enrollResp
	for attempt := 0; ; attempt++ {
		actx := ctx
		if attempt > 0 {
			// libp2p holds dials to a peer whose last dial failed off for
			// 5 s and more: a parent that was restarting would be back,
			// and these tries would not dial it.
			actx = network.WithForceDirectDial(ctx, "join: try again")
		}
		resp, err = enrollOnce(actx, h, tok, tokenText)
		var refused *wire.RemoteError
		if err == nil || errors.As(err, &refused) || attempt == joinAttempts-1 || ctx.Err() != nil {
			break
		}
		_ = h.Network().ClosePeer(tok.Parent)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(500<<attempt) * time.Millisecond):
		}
	}
	if err != nil {
		return Joined{}, err
	}
	root, err := crypto.UnmarshalPublicKey(resp.Root)
	if err != nil {
		return Joined{}, fmt.Errorf("parent sent a bad root key: %w", err)
	}
	v, err := cert.NewVerifier(root)
	if err != nil {
		return Joined{}, err
	}
	if v.Org != tok.Org {
		return Joined{}, fmt.Errorf("parent belongs to organisation %s, the token to %s: refusing", v.Org, tok.Org)
	}
	certs, err := v.Verify(resp.Chain)
	if err != nil {
		return Joined{}, fmt.Errorf("parent sent a certificate that does not verify: %w", err)
	}
	c := certs[0]
	if c.PeerID != h.ID() || c.Parent != tok.Parent || c.Role != tok.Role {
		return Joined{}, fmt.Errorf("parent issued a certificate for %s (%s under %s), not for this node", c.PeerID, c.Role, c.Parent)
	}
	return Joined{Chain: resp.Chain, Cert: c, Root: root, Token: tok}, nil
}

// joinAttempts bounds the tries of a join whose connection breaks.
const joinAttempts = 4

func enrollOnce(ctx context.Context, h host.Host, tok cert.Token, tokenText string) (enrollResp, error) {
	if err := h.Connect(ctx, peer.AddrInfo{ID: tok.Parent, Addrs: tok.Addrs}); err != nil {
		return enrollResp{}, fmt.Errorf("connect to parent %s at %v: %w", tok.Parent, tok.Addrs, err)
	}
	s, err := h.NewStream(ctx, tok.Parent, EnrollProtocol)
	if err != nil {
		return enrollResp{}, fmt.Errorf("open enrollment with parent %s: %w", tok.Parent, err)
	}
	resp, err := wire.Call[enrollReq, enrollResp](s, enrollReq{Token: tokenText}, maxResponse)
	var refused *wire.RemoteError
	if errors.As(err, &refused) {
		return resp, fmt.Errorf("parent %s refused enrollment: %w", tok.Parent, err)
	}
	if err != nil {
		return resp, fmt.Errorf("enrollment with parent %s: %w", tok.Parent, err)
	}
	return resp, nil
}

// Renew asks the parent for a fresh certificate.
func Renew(ctx context.Context, h host.Host, parent peer.ID) (cert.Chain, error) {
	s, err := h.NewStream(ctx, parent, RenewProtocol)
	if err != nil {
		return nil, fmt.Errorf("open renewal with parent %s: %w", parent, err)
	}
	resp, err := wire.Call[renewReq, renewResp](s, renewReq{}, maxResponse)
	if err != nil {
		return nil, fmt.Errorf("renew with parent %s: %w", parent, err)
	}
	return resp.Chain, nil
}
