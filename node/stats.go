package node

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"

	"github.com/swdist/swdist/node/api"
)

func traffic(s metrics.Stats) api.Traffic {
	return api.Traffic{In: s.TotalIn, Out: s.TotalOut, RateIn: s.RateIn, RateOut: s.RateOut}
}

// Bandwidth implements api.Backend: bytes in and out per protocol and per
// peer since start, so that an operator sees who served whom.
func (n *Node) Bandwidth(context.Context) (api.Bandwidth, error) {
	out := api.Bandwidth{Since: n.started.UTC().Format(time.RFC3339), Total: traffic(n.bw.GetBandwidthTotals()),
		Protocols: map[string]api.Traffic{}, Peers: []api.PeerTraffic{}}
	for p, s := range n.bw.GetBandwidthByProtocol() {
		name := string(p)
		if name == "" {
			name = "(negotiating)"
		}
		out.Protocols[name] = traffic(s)
	}
	for p, s := range n.bw.GetBandwidthByPeer() {
		pt := api.PeerTraffic{PeerID: p.String(), Traffic: traffic(s)}
		if pr, ok := n.member.Peer(p); ok {
			pt.Role, pt.Site, pt.Relation = string(pr.Cert.Role), pr.Cert.Site, "peer"
			switch {
			case p == n.parent:
				pt.Relation = "parent"
			case pr.Cert.Parent == n.host.ID():
				pt.Relation = "child"
			}
		}
		out.Peers = append(out.Peers, pt)
	}
	slices.SortFunc(out.Peers, func(a, b api.PeerTraffic) int {
		return cmp.Or(cmp.Compare(b.In+b.Out, a.In+a.Out), cmp.Compare(a.PeerID, b.PeerID))
	})
	return out, nil
}
