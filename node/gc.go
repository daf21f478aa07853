package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/node/store"
)

// GCResult is what one garbage collection of the block store did.
type GCResult struct {
	Before, After uint64   // bytes the block store held
	Budget        uint64   // 0: none, nothing was removed
	Blocks        int      // blocks removed
	Packages      []string // packages removed, as NAME@VERSION
}

// collectGarbage brings the block store under its budget: it removes,
// first, blocks of no package this node knows (left by fetches that were
// given up), then whole packages that no live pin holds and that are not
// installed here, oldest first, until the store fits. Blocks of pinned and
// installed packages, and blocks being fetched, are never removed.
func (n *Node) collectGarbage(ctx context.Context) (GCResult, error) {
	n.gcMu.Lock()
	defer n.gcMu.Unlock()
	budget := uint64(n.cfg.Blocks.Budget.Bytes)
	size, err := n.blocks.Size()
	if err != nil {
		return GCResult{}, fmt.Errorf("block store size: %w", err)
	}
	res := GCResult{Before: size, After: size, Budget: budget}
	if budget == 0 || size <= budget {
		return res, nil
	}
	now := time.Now()
	if err := n.store.DropExpiredPins(ctx, now); err != nil {
		return res, err
	}
	keep, err := n.keptPackages(ctx, now)
	if err != nil {
		return res, err
	}
	pkgs, err := n.store.Packages(ctx)
	if err != nil {
		return res, err
	}
	// Which blocks belong to which package, and which must stay.
	owners := map[string]int{} // multihash -> known packages using it
	pinned := map[string]bool{}
	blocksOf := map[string][]string{}
	for _, p := range pkgs {
		hs := n.packageHashes(ctx, p.CID)
		blocksOf[p.CID] = hs
		for _, h := range hs {
			owners[h]++
		}
	}
	// A pinned package may not be recorded yet: its fetch is under way or
	// was interrupted, and resumes from what it holds.
	for c := range keep {
		hs, ok := blocksOf[c]
		if !ok {
			hs = n.packageHashes(ctx, c)
		}
		for _, h := range hs {
			pinned[h] = true
		}
	}
	n.fetchMu.Lock()
	for k := range n.fetching {
		if c, err := cid.Cast([]byte(k)); err == nil {
			pinned[string(c.Hash())] = true
		}
	}
	for k := range n.wanted {
		if c, err := cid.Cast([]byte(k)); err == nil {
			pinned[string(c.Hash())] = true
		}
	}
	n.fetchMu.Unlock()

	var orphans []string
	if err := n.blocks.Keys(ctx, func(h string) bool {
		if owners[h] == 0 && !pinned[h] {
			orphans = append(orphans, h)
		}
		return true
	}); err != nil {
		return res, err
	}
	remove := func(hs []string) error {
		for _, h := range hs {
			if pinned[h] {
				continue
			}
			if err := n.blocks.DeleteHash(ctx, h); err != nil {
				return fmt.Errorf("remove block: %w", err)
			}
			res.Blocks++
		}
		res.After, err = n.blocks.Size()
		return err
	}
	if err := remove(orphans); err != nil {
		return res, err
	}
	slices.SortStableFunc(pkgs, func(a, b store.Package) int { return a.AddedAt.Compare(b.AddedAt) })
	for _, p := range pkgs {
		if res.After <= budget {
			break
		}
		if keep[p.CID] {
			continue
		}
		var mine []string
		for _, h := range blocksOf[p.CID] {
			if owners[h]--; owners[h] == 0 {
				mine = append(mine, h)
			}
		}
		if err := remove(mine); err != nil {
			return res, err
		}
		if err := n.store.ForgetPackage(ctx, p.CID); err != nil {
			return res, err
		}
		res.Packages = append(res.Packages, p.Name+"@"+p.Version)
	}
	if res.Blocks > 0 {
		n.log.Info("block store over its budget: removed what nothing holds", "before", res.Before, "after", res.After,
			"budget", budget, "blocks", res.Blocks, "packages", res.Packages)
	}
	if res.After > budget {
		n.log.Warn("block store still over its budget: the rest is pinned by jobs or installed", "bytes", res.After, "budget", budget)
	}
	return res, nil
}

// keptPackages are the packages that must stay: pinned by a live job or
// by 'package add', or installed; and the files collect jobs gathered.
func (n *Node) keptPackages(ctx context.Context, now time.Time) (map[string]bool, error) {
	keep := map[string]bool{}
	pins, err := n.store.Pins(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pins {
		if p.Live(now) {
			keep[p.CID] = true
		}
	}
	inst, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return nil, err
	}
	for _, i := range inst {
		keep[i.CID] = true
	}
	roots, err := n.store.CollectionRoots(ctx) // files collect jobs gathered
	if err != nil {
		return nil, err
	}
	for _, r := range roots {
		keep[r] = true
	}
	return keep, nil
}

// packageHashes are the multihashes of the blocks of package c held here:
// its root and, if the root is held, its chunks.
func (n *Node) packageHashes(ctx context.Context, c string) []string {
	root, err := cid.Decode(c)
	if err != nil {
		return nil
	}
	out := []string{string(root.Hash())}
	r, err := pkg.ReadRoot(ctx, n.blocks, root)
	if err != nil {
		return out
	}
	for _, ch := range r.CIDs() {
		out = append(out, string(ch.Hash()))
	}
	return out
}

// gcLoop checks the block store's budget every blocks.gc_every.
func (n *Node) gcLoop(ctx context.Context) error {
	t := time.NewTicker(n.cfg.Blocks.GCEvery.Duration)
	defer t.Stop()
	for {
		if _, err := n.collectGarbage(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("garbage-collect blocks", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// afterFetch runs a collection in the background once a package is in.
func (n *Node) afterFetch(ctx context.Context) {
	if n.cfg.Blocks.Budget.Bytes == 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if _, err := n.collectGarbage(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("garbage-collect blocks", "err", err)
		}
	}()
}
