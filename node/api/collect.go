package api

import (
	"context"
	"net/http"
	"net/url"
)

// JobFiles is what 'swdist job files' shows: what each destination of a
// collect job gathered, as known at this node.
type JobFiles struct {
	ID    string          `json:"id"`
	Peers []CollectedPeer `json:"peers"`
	// Out and Written are the CLI's: where it wrote the files.
	Out     string   `json:"out,omitempty"`
	Written []string `json:"written,omitempty"`
}

// CollectedPeer is one destination of a collect job.
type CollectedPeer struct {
	PeerID   string `json:"peer_id"`
	Hostname string `json:"hostname,omitempty"`
	// Dir names the destination's directory under --out: its hostname
	// where that is known and unique, its peer ID otherwise.
	Dir   string `json:"dir"`
	CID   string `json:"cid,omitempty"` // the root of what it collected
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
	// State: collected (held here, checked), not fetched, fetch failed, or
	// the destination's job state where it reported no files (skipped,
	// failed, running, not reported, ...).
	State   string   `json:"state"`
	Error   string   `json:"error,omitempty"`   // why the fetch or the job failed, or why skipped
	Skipped []string `json:"skipped,omitempty"` // "path: why" for what it did not collect
}

// CollectBackend is the collect part of Backend.
type CollectBackend interface {
	// JobFiles lists a collect job's files; with fetch, what is not held
	// here is fetched through the tree first.
	JobFiles(ctx context.Context, id string, fetch bool) (JobFiles, error)
}

func collectRoutes(mux *http.ServeMux, b CollectBackend) {
	handle(mux, "GET /v1/jobs/{id}/files", func(r *http.Request) (any, error) {
		return b.JobFiles(r.Context(), r.PathValue("id"), false)
	})
	handle(mux, "POST /v1/jobs/{id}/files/fetch", func(r *http.Request) (any, error) {
		return b.JobFiles(r.Context(), r.PathValue("id"), true)
	})
}

// JobFiles calls GET /v1/jobs/{id}/files, or with fetch POST
// /v1/jobs/{id}/files/fetch.
func (c *Client) JobFiles(ctx context.Context, id string, fetch bool) (JobFiles, error) {
	var out JobFiles
	if fetch {
		return out, c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/files/fetch", struct{}{}, &out)
	}
	return out, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/files", nil, &out)
}
