package node

import (
	"context"
	"errors"
	"time"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/node/job"
)

// cancelJob carries out a "cancel" manifest on this node: if it holds the
// job named, the job is for this node, and the canceller's scope covers the
// scope of the job's administrator, the job ends cancelled here unless it
// already runs. (The cancel itself travels on like any manifest.)
func (n *Node) cancelJob(ctx context.Context, c gossip.Verified) {
	id := c.Params[gossip.ParamJob]
	raw, err := n.store.ManifestRaw(ctx, id)
	if err != nil {
		n.log.Info("cancel for a job not held here", "job", id, "cancel", c.JobID)
		return
	}
	s, err := gossip.Decode(raw)
	if err != nil {
		n.log.Error("stored manifest", "job", id, "err", err)
		return
	}
	orig, err := gossip.Open(n.verifier, s, time.Now())
	if err != nil {
		n.log.Info("cancel of a job that cannot run any more", "job", id, "err", err)
		return
	}
	if !admin.Covers(c.Admin.Scope, orig.Issuer) {
		n.log.Warn("cancel refused: the canceller's scope does not cover the job's", "job", id, "by", c.Admin.Name,
			"scope", c.Admin.Scope, "job_scope", orig.Admin.Scope)
		return
	}
	chain := n.selfCerts()
	if !orig.ScopeCovers(chain) || !orig.Target.Matches(chain) {
		return // not a destination here
	}
	switch err := n.exec.Cancel(id, "cancelled by "+c.Admin.Name); {
	case errors.Is(err, job.ErrTooLate):
		n.log.Info("cancel came too late", "job", id, "err", err)
	case err != nil:
		n.log.Error("cancel", "job", id, "err", err)
	}
}

// applyEarlierCancels carries out the cancels held here for job v that came
// before it (a node that was offline gets a job and its cancel together,
// the cancel first): cancelled before it is taken, it never runs.
func (n *Node) applyEarlierCancels(ctx context.Context, v gossip.Verified) {
	jobs, err := n.store.Jobs(ctx)
	if err != nil {
		n.log.Error("look for cancels of a new job", "job", v.JobID, "err", err)
		return
	}
	for _, j := range jobs {
		if j.Type != gossip.TypeCancel || !j.ForMe {
			continue
		}
		raw, err := n.store.ManifestRaw(ctx, j.ID)
		if err != nil {
			continue
		}
		// Checked again (cancelJob needs it verified) only if it is this
		// job's.
		if m, _, err := gossip.Describe(raw); err != nil || m.Params[gossip.ParamJob] != v.JobID {
			continue
		}
		s, err := gossip.Decode(raw)
		if err != nil {
			continue
		}
		c, err := gossip.Open(n.verifier, s, time.Now())
		if err != nil {
			continue
		}
		n.cancelJob(ctx, c)
	}
}
