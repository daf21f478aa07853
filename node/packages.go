package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/store"
)

// AddPackage implements api.Backend: records a package built into this
// node's block store (by 'swdist package add'), after checking that its
// root is there and sound.
func (n *Node) AddPackage(ctx context.Context, p api.Package) (api.Package, error) {
	c, err := cid.Decode(p.CID)
	if err != nil {
		return api.Package{}, api.BadRequest("package root %q: %v", p.CID, err)
	}
	bs := n.blocks
	r, err := pkg.ReadRoot(ctx, bs, c)
	if err != nil {
		return api.Package{}, api.BadRequest("package %s: %v", c, err)
	}
	missing, err := pkg.Missing(ctx, bs, r)
	if err != nil {
		return api.Package{}, err
	}
	if len(missing) > 0 {
		return api.Package{}, api.BadRequest("package %s: %d of its %d chunks are not in %s", c, len(missing), len(r.Chunks), n.home.Blocks())
	}
	sp := store.Package{CID: c.String(), Name: r.Name, Version: r.Version, Size: r.Size, Stored: r.Stored, Chunks: len(r.Chunks), AddedAt: time.Now()}
	if err := n.store.AddPackage(ctx, sp); err != nil {
		return api.Package{}, api.BadRequest("%v", err)
	}
	// Added here: kept until a delete job removes it.
	if err := n.store.AddPin(ctx, store.Pin{CID: sp.CID}); err != nil {
		return api.Package{}, fmt.Errorf("pin package %s: %w", sp.CID, err)
	}
	return apiPackage(sp, true), nil
}

func apiPackage(p store.Package, held bool) api.Package {
	return api.Package{CID: p.CID, Name: p.Name, Version: p.Version, Size: p.Size, StoredBytes: p.Stored,
		Chunks: p.Chunks, AddedAt: p.AddedAt, Held: held}
}

// held reports whether every block of package c is in the block store.
func (n *Node) held(ctx context.Context, bs *blocks.Store, c string) bool {
	id, err := cid.Decode(c)
	if err != nil {
		return false
	}
	r, err := pkg.ReadRoot(ctx, bs, id)
	if err != nil {
		return false
	}
	missing, err := pkg.Missing(ctx, bs, r)
	return err == nil && len(missing) == 0
}

// ListPackages implements api.Backend.
func (n *Node) ListPackages(ctx context.Context) ([]api.Package, error) {
	ps, err := n.store.Packages(ctx)
	if err != nil {
		return nil, err
	}
	keep, err := n.keepReasons(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.Package{}
	for _, p := range ps {
		ap := apiPackage(p, n.held(ctx, n.blocks, p.CID))
		ap.Pins, ap.Installed = append([]api.Pin{}, keep.pins[p.CID]...), keep.installed[p.CID]
		out = append(out, ap)
	}
	return out, nil
}

type keepReasons struct {
	pins      map[string][]api.Pin // live pins, by package CID
	installed map[string]bool
}

// keepReasons says why this node keeps each package it keeps.
func (n *Node) keepReasons(ctx context.Context) (keepReasons, error) {
	k := keepReasons{pins: map[string][]api.Pin{}, installed: map[string]bool{}}
	pins, err := n.store.Pins(ctx)
	if err != nil {
		return k, err
	}
	now := time.Now()
	for _, p := range pins {
		if !p.Live(now) {
			continue
		}
		ap := api.Pin{Job: p.Job}
		if !p.Until.IsZero() {
			ap.Until = &p.Until
		}
		k.pins[p.CID] = append(k.pins[p.CID], ap)
	}
	inst, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return k, err
	}
	for _, i := range inst {
		k.installed[i.CID] = true
	}
	return k, nil
}

// FindPackage implements api.Backend.
func (n *Node) FindPackage(ctx context.Context, ref string) (api.Package, error) {
	p, err := n.store.FindPackage(ctx, ref)
	if errors.Is(err, store.ErrNoPackage) {
		return api.Package{}, api.BadRequest("%v", err)
	}
	if err != nil {
		return api.Package{}, fmt.Errorf("find package %s: %w", ref, err)
	}
	return apiPackage(p, n.held(ctx, n.blocks, p.CID)), nil
}

// FetchPackage implements api.Backend: fetches every block of the package
// root CID that this node lacks through the tree, and records it.
func (n *Node) FetchPackage(ctx context.Context, root string) (api.Package, error) {
	c, err := cid.Decode(root)
	if err != nil {
		return api.Package{}, api.BadRequest("package root %q: %v", root, err)
	}
	r, err := n.fetchPackage(ctx, c, nil)
	if err != nil {
		return api.Package{}, err
	}
	sp := store.Package{CID: c.String(), Name: r.Name, Version: r.Version, Size: r.Size, Stored: r.Stored, Chunks: len(r.Chunks), AddedAt: time.Now()}
	if err := n.store.AddPackage(ctx, sp); err != nil {
		return api.Package{}, err
	}
	n.afterFetch(context.WithoutCancel(ctx))
	return apiPackage(sp, true), nil
}
