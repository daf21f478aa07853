package node

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node/store"
)

// pullThrough fetches the blocks this node does not hold from its parent
// (the root has nowhere to go), each once however many ask for it at the
// same time: a block already being fetched is waited for, not asked again.
func (n *Node) pullThrough(ctx context.Context, cids []cid.Cid) error {
	if n.parent == "" {
		return nil
	}
	var mine []cid.Cid
	var theirs []chan struct{}
	n.fetchMu.Lock()
	for _, c := range cids {
		if ch, ok := n.fetching[c.KeyString()]; ok {
			theirs = append(theirs, ch)
			continue
		}
		n.fetching[c.KeyString()] = make(chan struct{})
		mine = append(mine, c)
	}
	n.fetchMu.Unlock()
	var missing []cid.Cid
	var err error
	if len(mine) > 0 {
		missing, err = n.exchange.Fetch(ctx, n.parent, mine)
		n.fetchMu.Lock()
		for _, c := range mine {
			close(n.fetching[c.KeyString()])
			delete(n.fetching, c.KeyString())
		}
		n.fetchMu.Unlock()
	}
	for _, ch := range theirs {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("%d of %d blocks not found at the parent", len(missing), len(cids))
	}
	return err
}

// fetchPackage makes sure every block of the package root is held here,
// fetching what is missing from the parent (which fetches from its own
// parent what it lacks).
func (n *Node) fetchPackage(ctx context.Context, root cid.Cid) (pkg.Root, error) {
	if ok, err := n.blocks.Has(ctx, root); err != nil {
		return pkg.Root{}, err
	} else if !ok {
		if err := n.pullThrough(ctx, []cid.Cid{root}); err != nil {
			return pkg.Root{}, fmt.Errorf("fetch package %s: %w", root, err)
		}
	}
	r, err := pkg.ReadRoot(ctx, n.blocks, root)
	if err != nil {
		return pkg.Root{}, err
	}
	missing, err := pkg.Missing(ctx, n.blocks, r)
	if err != nil || len(missing) == 0 {
		return r, err
	}
	if err := n.pullThrough(ctx, missing); err != nil {
		return pkg.Root{}, fmt.Errorf("fetch package %s@%s (%s): %w", r.Name, r.Version, root, err)
	}
	return r, nil
}

// prefetch fetches, in the background, the package a manifest names, so
// that it is here before this relay's children ask for it.
func (n *Node) prefetch(ctx context.Context, v gossip.Verified) {
	root, err := cid.Decode(v.Package.CID)
	if err != nil {
		n.log.Warn("manifest names a bad package", "job", v.JobID, "err", err)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithDeadline(ctx, v.ExpiresAt)
		defer cancel()
		start := time.Now()
		r, err := n.fetchPackage(ctx, root)
		if err != nil {
			n.log.Warn("prefetch package", "job", v.JobID, "package", root, "err", err)
			return
		}
		n.log.Info("package prefetched", "job", v.JobID, "package", r.Name+" "+r.Version, "took", time.Since(start).Round(time.Millisecond))
		if err := n.store.AddPackage(ctx, store.Package{CID: root.String(), Name: r.Name, Version: r.Version, Size: r.Size,
			Stored: r.Stored, Chunks: len(r.Chunks), AddedAt: time.Now()}); err != nil {
			n.log.Warn("record prefetched package", "package", root, "err", err)
		}
	}()
}

// BlocksServed counts the blocks this node sent, by peer.
func (n *Node) BlocksServed() map[peer.ID]int { return n.exchange.Served() }

// ReportsReceived counts the report batches and reports this node's
// children sent it.
func (n *Node) ReportsReceived() (batches, reports int) { return n.reports.Received() }
