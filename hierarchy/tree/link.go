package tree

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
)

// LinkConfig configures a parent link.
type LinkConfig struct {
	Parent peer.ID
	// Addrs are the parent's configured addresses; addresses learned from
	// the parent itself (identify) are tried too.
	Addrs  []ma.Multiaddr
	Member *member.Service
	// MinBackoff and MaxBackoff bound the wait between attempts. Each wait
	// is drawn uniformly from [0, min(MaxBackoff, MinBackoff·2^attempt)]
	// ("full jitter"), so that thousands of children whose relay comes back
	// do not all dial it in the same second.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// OnUp runs each time the link is (re)established and verified.
	OnUp   func(ctx context.Context, parent member.Peer)
	Logger *slog.Logger
}

// Link keeps this node connected to its parent.
type Link struct {
	h   host.Host
	cfg LinkConfig
	log *slog.Logger
}

// NewLink makes a parent link; Run runs it.
func NewLink(h host.Host, cfg LinkConfig) *Link {
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Link{h: h, cfg: cfg, log: cfg.Logger.With("svc", "parent-link", "parent", cfg.Parent)}
}

// Backoff returns the wait before attempt n (0-based) under full jitter.
func Backoff(n int, min, max time.Duration) time.Duration {
	ceil := max
	if n < 30 {
		if c := min << n; c < max {
			ceil = c
		}
	}
	return rand.N(ceil + 1)
}

// Run connects, waits for the link to drop, and reconnects, until ctx ends.
func (l *Link) Run(ctx context.Context) error {
	sub, err := l.h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return fmt.Errorf("watch connections: %w", err)
	}
	defer sub.Close()
	// Drain every event at once: the bus blocks its emitter on a subscriber
	// that stops reading, and a relay sees one event per child.
	down := make(chan struct{}, 1)
	go func() {
		for e := range sub.Out() {
			ev := e.(event.EvtPeerConnectednessChanged)
			if ev.Peer == l.cfg.Parent && ev.Connectedness != network.Connected {
				select {
				case down <- struct{}{}:
				default:
				}
			}
		}
	}()
	attempt := 0
	for {
		pr, err := l.connect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			wait := Backoff(attempt, l.cfg.MinBackoff, l.cfg.MaxBackoff)
			attempt++
			if reason, ok := l.cfg.Member.RefusedBy(l.cfg.Parent); ok {
				// Its gater drops this node before any hello now; it said
				// why when it cut the link.
				err = fmt.Errorf("%w; the parent refused this node when it cut the link: %s", err, reason)
			}
			if strings.Contains(err.Error(), cert.ErrRevoked.Error()) {
				l.log.Error("the parent refuses this node: it was revoked; enroll it again with a new token", "err", err)
			} else {
				l.log.Info("parent unreachable; retrying", "err", err, "attempt", attempt, "in", wait.Round(time.Millisecond))
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		attempt = 0
		select { // forget a loss signalled before this connection
		case <-down:
		default:
		}
		l.h.ConnManager().Protect(l.cfg.Parent, "parent")
		l.log.Info("connected to parent", "role", pr.Cert.Role, "site", pr.Cert.Site)
		if l.cfg.OnUp != nil {
			go l.cfg.OnUp(ctx, pr)
		}
		if !l.waitDown(ctx, down) {
			return nil
		}
		l.log.Warn("lost parent")
		// The first attempt after a loss is jittered too: every sibling
		// lost the same parent at the same moment.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(Backoff(0, l.cfg.MinBackoff, l.cfg.MaxBackoff)):
		}
	}
}

func (l *Link) connect(ctx context.Context) (member.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	addrs := append(l.h.Peerstore().Addrs(l.cfg.Parent), l.cfg.Addrs...)
	dctx := network.WithForceDirectDial(ctx, "parent link has its own backoff")
	if err := l.h.Connect(dctx, peer.AddrInfo{ID: l.cfg.Parent, Addrs: addrs}); err != nil {
		return member.Peer{}, err
	}
	pr, err := l.cfg.Member.Wait(ctx, l.cfg.Parent)
	if err != nil {
		// Drop what this attempt left, so that the next one dials afresh: a
		// hello that failed after its connection closed leaves its error
		// recorded, and a connection to a peer with that record is never
		// greeted, so each retry would fail at once with the old error.
		_ = l.h.Network().ClosePeer(l.cfg.Parent)
		return member.Peer{}, fmt.Errorf("parent's membership: %w", err)
	}
	if !pr.Cert.Role.CanIssue() {
		return member.Peer{}, fmt.Errorf("parent has role %s", pr.Cert.Role)
	}
	return pr, nil
}

// waitDown returns true when the parent disconnects, false when ctx ends.
func (l *Link) waitDown(ctx context.Context, down <-chan struct{}) bool {
	for l.h.Network().Connectedness(l.cfg.Parent) == network.Connected {
		select {
		case <-ctx.Done():
			return false
		case <-down:
		}
	}
	return true
}
