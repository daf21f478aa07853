package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/swdist/swdist/node/inventory"
)

// InventoryQuery is an 'inventory ls', 'sum' or 'export' request.
type InventoryQuery struct {
	Where  []string `json:"where"`
	By     []string `json:"by"`
	Stats  []string `json:"stats"`
	Fields []string `json:"fields"`
}

func (q InventoryQuery) values() url.Values {
	v := url.Values{}
	for _, w := range q.Where {
		v.Add("where", w)
	}
	for _, b := range q.By {
		v.Add("by", b)
	}
	for _, s := range q.Stats {
		v.Add("stat", s)
	}
	if len(q.Fields) > 0 {
		v.Set("fields", strings.Join(q.Fields, ","))
	}
	return v
}

func inventoryQuery(r *http.Request) InventoryQuery {
	v := r.URL.Query()
	q := InventoryQuery{Where: v["where"], By: v["by"], Stats: v["stat"]}
	if f := v.Get("fields"); f != "" {
		q.Fields = strings.Split(f, ",")
	}
	return q
}

// InventoryMachine is 'inventory show': everything one machine reported.
type InventoryMachine struct {
	PeerID     string    `json:"peer_id"`
	ReportedAt time.Time `json:"reported_at"`
	FullAt     time.Time `json:"full_at"`
	// Stale: a delta arrived on a base this node did not hold; some values
	// may be missing until the machine's next full report.
	Stale   bool                       `json:"stale"`
	Via     string                     `json:"via"`
	Seq     uint64                     `json:"seq"`
	Parts   map[string]time.Time       `json:"parts"` // part → when it last changed
	Fields  map[string]InventoryValue  `json:"fields"`
	Items   map[string][]InventoryItem `json:"items"`
	Changes []InventoryChange          `json:"changes"` // newest first
}

// InventoryValue is a scalar field's value and when it last changed.
type InventoryValue struct {
	Value     string    `json:"value"`
	ChangedAt time.Time `json:"changed_at"`
}

// InventoryItem is one item and since when the machine has it.
type InventoryItem struct {
	Attrs inventory.Item `json:"attrs"`
	Since time.Time      `json:"since"`
}

// InventoryChange is one recorded change: old is empty for something
// added, new for something removed.
type InventoryChange struct {
	At    time.Time `json:"at"`
	Field string    `json:"field"`
	Old   *string   `json:"old"`
	New   *string   `json:"new"`
}

// InventoryStats says what a node holds and what it refused.
type InventoryStats struct {
	Machines int            `json:"machines"`
	Stale    int            `json:"stale"`
	Refused  map[string]int `json:"refused"` // reports refused since start, by reason
}

// CustomRequest sets (or, with Unset, removes) a custom inventory field on
// this machine.
type CustomRequest struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Unset bool   `json:"unset"`
}

// CustomResult says where a custom field was written.
type CustomResult struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	File  string `json:"file"`
}

// Collected is what one collection reported.
type Collected struct {
	Seq     uint64 `json:"seq"`
	Full    bool   `json:"full"`
	Changes int    `json:"changes"`
}

// InventoryBackend is the inventory part of Backend.
type InventoryBackend interface {
	InventoryList(ctx context.Context, q InventoryQuery) ([]inventory.Row, error)
	InventorySum(ctx context.Context, q InventoryQuery) (inventory.Sum, error)
	InventoryShow(ctx context.Context, peer string) (InventoryMachine, error)
	InventoryFields(ctx context.Context) ([]string, error)
	InventoryStats(ctx context.Context) (InventoryStats, error)
	InventorySet(ctx context.Context, req CustomRequest) (CustomResult, error)
	InventoryCollect(ctx context.Context) (Collected, error)
}

func inventoryRoutes(mux *http.ServeMux, b InventoryBackend) {
	handle(mux, "GET /v1/inventory", func(r *http.Request) (any, error) { return b.InventoryList(r.Context(), inventoryQuery(r)) })
	handle(mux, "GET /v1/inventory/sum", func(r *http.Request) (any, error) { return b.InventorySum(r.Context(), inventoryQuery(r)) })
	handle(mux, "GET /v1/inventory/fields", func(r *http.Request) (any, error) { return b.InventoryFields(r.Context()) })
	handle(mux, "GET /v1/inventory/stats", func(r *http.Request) (any, error) { return b.InventoryStats(r.Context()) })
	handle(mux, "GET /v1/inventory/machines/{peer}", func(r *http.Request) (any, error) {
		return b.InventoryShow(r.Context(), r.PathValue("peer"))
	})
	handle(mux, "POST /v1/inventory/custom", func(r *http.Request) (any, error) {
		var req CustomRequest
		if err := decode(r, &req); err != nil {
			return nil, err
		}
		return b.InventorySet(r.Context(), req)
	})
	handle(mux, "POST /v1/inventory/collect", func(r *http.Request) (any, error) { return b.InventoryCollect(r.Context()) })
}

// InventoryList calls GET /v1/inventory.
func (c *Client) InventoryList(ctx context.Context, q InventoryQuery) ([]inventory.Row, error) {
	var out []inventory.Row
	return out, c.do(ctx, http.MethodGet, "/v1/inventory?"+q.values().Encode(), nil, &out)
}

// InventorySum calls GET /v1/inventory/sum.
func (c *Client) InventorySum(ctx context.Context, q InventoryQuery) (inventory.Sum, error) {
	var out inventory.Sum
	return out, c.do(ctx, http.MethodGet, "/v1/inventory/sum?"+q.values().Encode(), nil, &out)
}

// InventoryShow calls GET /v1/inventory/machines/{peer}.
func (c *Client) InventoryShow(ctx context.Context, peer string) (InventoryMachine, error) {
	var out InventoryMachine
	return out, c.do(ctx, http.MethodGet, "/v1/inventory/machines/"+url.PathEscape(peer), nil, &out)
}

// InventoryFields calls GET /v1/inventory/fields.
func (c *Client) InventoryFields(ctx context.Context) ([]string, error) {
	var out []string
	return out, c.do(ctx, http.MethodGet, "/v1/inventory/fields", nil, &out)
}

// InventoryStats calls GET /v1/inventory/stats.
func (c *Client) InventoryStats(ctx context.Context) (InventoryStats, error) {
	var out InventoryStats
	return out, c.do(ctx, http.MethodGet, "/v1/inventory/stats", nil, &out)
}

// InventorySet calls POST /v1/inventory/custom.
func (c *Client) InventorySet(ctx context.Context, req CustomRequest) (CustomResult, error) {
	var out CustomResult
	return out, c.do(ctx, http.MethodPost, "/v1/inventory/custom", req, &out)
}

// InventoryCollect calls POST /v1/inventory/collect.
func (c *Client) InventoryCollect(ctx context.Context) (Collected, error) {
	var out Collected
	return out, c.do(ctx, http.MethodPost, "/v1/inventory/collect", struct{}{}, &out)
}
