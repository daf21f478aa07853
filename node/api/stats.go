package api

import (
	"context"
	"net/http"
)

// Traffic is bytes in and out, and the current rates (bytes/s).
type Traffic struct {
	In      int64   `json:"in"`
	Out     int64   `json:"out"`
	RateIn  float64 `json:"rate_in"`
	RateOut float64 `json:"rate_out"`
}

// PeerTraffic is one peer's traffic with this node.
type PeerTraffic struct {
	PeerID   string `json:"peer_id"`
	Role     string `json:"role,omitempty"`
	Site     string `json:"site,omitempty"`
	Relation string `json:"relation,omitempty"` // parent, child or peer; empty if no longer connected
	Traffic
}

// Bandwidth is 'swdist stats bw': the bytes of every libp2p stream since
// the daemon started, in total, per protocol and per peer. Connection
// overhead (handshakes, multiplexer and encryption framing) is not counted.
type Bandwidth struct {
	Since     string             `json:"since"`
	Total     Traffic            `json:"total"`
	Protocols map[string]Traffic `json:"protocols"`
	Peers     []PeerTraffic      `json:"peers"`
}

func statsRoutes(mux *http.ServeMux, b Backend) {
	handle(mux, "GET /v1/stats/bw", func(r *http.Request) (any, error) { return b.Bandwidth(r.Context()) })
}

// Bandwidth calls GET /v1/stats/bw.
func (c *Client) Bandwidth(ctx context.Context) (Bandwidth, error) {
	var out Bandwidth
	return out, c.do(ctx, http.MethodGet, "/v1/stats/bw", nil, &out)
}
