package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Reported is what the agent last reported: the base of its next delta.
type Reported struct {
	Seq         uint64
	Inventory   Inventory
	CollectedAt time.Time
	FullAt      time.Time
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	Collectors []Collector
	// Timeout bounds each collector (default 30 s).
	Timeout time.Duration
	// Every is the interval between collections (default 24 h), each
	// jittered by ±10 % so that a site's machines do not report at once.
	Every time.Duration
	// FullEvery: a full inventory goes up at least this often (default
	// 7 days), so that a managing node that lost a delta heals.
	FullEvery time.Duration
	// Load returns what was last reported (ok false: never).
	Load func(ctx context.Context) (Reported, bool, error)
	// Commit durably queues the report of d and records next as reported,
	// both or neither.
	Commit func(ctx context.Context, d Delta, next Reported) error
	Logger *slog.Logger
}

// Agent collects this machine's inventory at start when due, on its
// interval, and when triggered (an inventory job, a change of custom
// fields, software installed or removed), and reports what changed.
type Agent struct {
	cfg     AgentConfig
	log     *slog.Logger
	trigger chan string
	mu      sync.Mutex // one collection at a time
}

// NewAgent makes an Agent with cfg's defaults filled in.
func NewAgent(cfg AgentConfig) *Agent {
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Every == 0 {
		cfg.Every = 24 * time.Hour
	}
	if cfg.FullEvery == 0 {
		cfg.FullEvery = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Agent{cfg: cfg, log: cfg.Logger.With("svc", "inventory"), trigger: make(chan string, 1)}
}

// Trigger asks for a collection soon.
func (a *Agent) Trigger(why string) {
	select {
	case a.trigger <- why:
	default:
	}
}

// Run collects when due until ctx ends. After a restart the interval runs
// on from the last collection.
func (a *Agent) Run(ctx context.Context) error {
	for {
		last, ok, err := a.cfg.Load(ctx)
		if err != nil {
			return err
		}
		wait := time.Duration(0)
		if ok {
			jitter := 0.9 + 0.2*rand.Float64()
			wait = time.Until(last.CollectedAt.Add(time.Duration(float64(a.cfg.Every) * jitter)))
		}
		why := "interval"
		if !ok {
			why = "first inventory"
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case why = <-a.trigger:
			case <-time.After(wait):
			}
		}
		if _, err := a.CollectNow(ctx, why); err != nil && ctx.Err() == nil {
			a.log.Error("inventory", "err", err)
			select { // do not spin on a failing database
			case <-ctx.Done():
				return nil
			case <-time.After(time.Minute):
			}
		}
	}
}

// CollectNow collects and reports at once, and returns what went up.
func (a *Agent) CollectNow(ctx context.Context, why string) (Delta, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	last, ok, err := a.cfg.Load(ctx)
	if err != nil {
		return Delta{}, err
	}
	start := time.Now()
	// A collector that fails keeps its part of what was last reported.
	inv := Collect(ctx, a.cfg.Collectors, a.cfg.Timeout, last.Inventory)
	if ctx.Err() != nil {
		return Delta{}, ctx.Err()
	}
	next := Reported{Seq: last.Seq + 1, Inventory: inv, CollectedAt: start, FullAt: last.FullAt}
	var d Delta
	if !ok || time.Since(last.FullAt) >= a.cfg.FullEvery {
		d = FullDelta(inv, next.Seq)
		next.FullAt = start
	} else {
		d = Diff(last.Inventory, inv, next.Seq)
	}
	if err := d.Validate(); err != nil {
		return Delta{}, fmt.Errorf("this machine's own inventory: %w", err)
	}
	if err := a.cfg.Commit(ctx, d, next); err != nil {
		return Delta{}, fmt.Errorf("report inventory: %w", err)
	}
	a.log.Info("inventory reported", "why", why, "full", d.Full, "changes", d.Changes(), "took", time.Since(start).Round(time.Millisecond))
	return d, nil
}
