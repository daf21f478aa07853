package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Package is one entry of 'swdist package ls', and what 'package add'
// prints.
type Package struct {
	CID         string    `json:"cid"`
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Size        uint64    `json:"size"`
	StoredBytes uint64    `json:"stored_bytes"`
	Chunks      int       `json:"chunks"`
	AddedAt     time.Time `json:"added_at"`
	// Held: every block of the package is in this node's block store.
	Held bool `json:"held"`
	// Why this node keeps it: the pins that hold it now, and whether it is
	// installed here. A package with neither is removed when the block
	// store is over its budget (blocks.budget).
	Pins      []Pin `json:"pins"`
	Installed bool  `json:"installed"`
}

// Pin is a reason to keep a package: the job that named it, until the job
// expires, or its 'package add' on this node (Job empty, no end).
type Pin struct {
	Job   string     `json:"job,omitempty"`
	Until *time.Time `json:"until,omitempty"`
}

// PackageBackend is the packages part of Backend.
type PackageBackend interface {
	AddPackage(ctx context.Context, p Package) (Package, error)
	ListPackages(ctx context.Context) ([]Package, error)
	FindPackage(ctx context.Context, ref string) (Package, error)
	// FetchPackage gets every block of a package through the tree.
	FetchPackage(ctx context.Context, cid string) (Package, error)
}

func packageRoutes(mux *http.ServeMux, b PackageBackend) {
	handle(mux, "POST /v1/packages", func(r *http.Request) (any, error) {
		var p Package
		if err := decode(r, &p); err != nil {
			return nil, err
		}
		return b.AddPackage(r.Context(), p)
	})
	handle(mux, "GET /v1/packages", func(r *http.Request) (any, error) { return b.ListPackages(r.Context()) })
	handle(mux, "GET /v1/packages/{ref}", func(r *http.Request) (any, error) { return b.FindPackage(r.Context(), r.PathValue("ref")) })
	handle(mux, "POST /v1/packages/{cid}/fetch", func(r *http.Request) (any, error) { return b.FetchPackage(r.Context(), r.PathValue("cid")) })
}

// AddPackage calls POST /v1/packages.
func (c *Client) AddPackage(ctx context.Context, p Package) (Package, error) {
	var out Package
	return out, c.do(ctx, http.MethodPost, "/v1/packages", p, &out)
}

// ListPackages calls GET /v1/packages.
func (c *Client) ListPackages(ctx context.Context) ([]Package, error) {
	var out []Package
	return out, c.do(ctx, http.MethodGet, "/v1/packages", nil, &out)
}

// FindPackage calls GET /v1/packages/{ref}.
func (c *Client) FindPackage(ctx context.Context, ref string) (Package, error) {
	var out Package
	return out, c.do(ctx, http.MethodGet, "/v1/packages/"+url.PathEscape(ref), nil, &out)
}

// FetchPackage calls POST /v1/packages/{cid}/fetch.
func (c *Client) FetchPackage(ctx context.Context, cid string) (Package, error) {
	var out Package
	return out, c.do(ctx, http.MethodPost, "/v1/packages/"+url.PathEscape(cid)+"/fetch", struct{}{}, &out)
}
