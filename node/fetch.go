package node

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/swdist/swdist/content/pkg"
)

// pullThrough fetches, for a child that asked, the blocks this node does
// not hold from its parent (the root has nowhere to go).
func (n *Node) pullThrough(ctx context.Context, cids []cid.Cid) error {
	if n.parent == "" {
		return nil
	}
	missing, err := n.exchange.Fetch(ctx, n.parent, cids)
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
