package enroll

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/swdist/swdist/hierarchy/cert"
)

// RenewerConfig configures a Renewer.
type RenewerConfig struct {
	Chain func() cert.Chain
	// Renew obtains a fresh chain: from the parent, or on the root node by
	// signing with the organisation key.
	Renew func(ctx context.Context) (cert.Chain, error)
	// Verify checks a fresh chain before it is adopted.
	Verify func(cert.Chain) error
	// Adopt stores and starts using a fresh chain.
	Adopt func(cert.Chain) error
	// At is the fraction of the chain's remaining validity after which it is
	// renewed (default 2/3 of its lifetime has passed).
	At    float64
	Retry time.Duration // wait after a failed renewal, default 1 minute
	// MinInterval spaces renewals even when a short-lived parent chain
	// makes them due at once again (default 10 s).
	MinInterval time.Duration
	Logger      *slog.Logger
}

// Renewer renews this node's certificate before it expires.
type Renewer struct{ cfg RenewerConfig }

// NewRenewer makes a renewer; Run runs it.
func NewRenewer(cfg RenewerConfig) *Renewer {
	if cfg.At == 0 {
		cfg.At = 2.0 / 3
	}
	if cfg.Retry == 0 {
		cfg.Retry = time.Minute
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("svc", "renew")
	return &Renewer{cfg: cfg}
}

// due is when ch should be renewed: the At fraction of the way from its
// issue (not-before is backdated by the clock skew allowance) to the chain's
// earliest expiry. Renewals are spaced by at least MinInterval, or a tenth
// of the span for very short-lived certificates.
func (r *Renewer) due(ch cert.Chain) (at time.Time, spacing time.Duration, err error) {
	leaf, err := ch.Leaf()
	if err != nil {
		return time.Time{}, 0, err
	}
	end, err := ch.NotAfter()
	if err != nil {
		return time.Time{}, 0, err
	}
	issued := leaf.NotBefore.Add(cert.ClockSkew)
	span := end.Sub(issued)
	return issued.Add(time.Duration(float64(span) * r.cfg.At)), min(r.cfg.MinInterval, span/10), nil
}

// Run renews whenever due until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	var last time.Time
	for {
		at, spacing, err := r.due(r.cfg.Chain())
		if err != nil {
			return fmt.Errorf("read own certificate: %w", err)
		}
		if earliest := last.Add(spacing); at.Before(earliest) {
			at = earliest
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(at)):
		}
		last = time.Now()
		if err := r.renewOnce(ctx); err != nil {
			r.cfg.Logger.Warn("certificate renewal failed; will retry", "err", err, "retry_in", r.cfg.Retry)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(r.cfg.Retry):
			}
		}
	}
}

func (r *Renewer) renewOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ch, err := r.cfg.Renew(ctx)
	if err != nil {
		return err
	}
	if err := r.cfg.Verify(ch); err != nil {
		return fmt.Errorf("renewed certificate does not verify: %w", err)
	}
	if err := r.cfg.Adopt(ch); err != nil {
		return fmt.Errorf("store renewed certificate: %w", err)
	}
	end, _ := ch.NotAfter()
	r.cfg.Logger.Info("certificate renewed", "not_after", end)
	return nil
}
