package node

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/content/ratelimit"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/node/job"
)

// fetchLimit paces what this node fetches over its WAN link (wan.rate,
// within wan.window): blocks from nodes at another site, such as a
// relay's parent, its sibling relays and its ancestors. Blocks from peers
// at this node's own site (a client's relay and neighbours) are not paced.
func (n *Node) fetchLimit() func(peer.ID) *ratelimit.Limiter {
	var active func(time.Time) bool
	if n.cfg.WAN.Window != "" {
		w, _ := job.ParseWindow(n.cfg.WAN.Window) // checked when the config was loaded
		active = w.Contains
	}
	lim := ratelimit.New(float64(n.cfg.WAN.Rate.Bytes), active)
	if lim == nil {
		return nil
	}
	return func(p peer.ID) *ratelimit.Limiter {
		if pr, ok := n.member.Peer(p); ok && !n.acrossWAN(pr) {
			return nil
		}
		return lim
	}
}

// acrossWAN says whether pr is at another site than this node: what passes
// between them crosses this node's WAN link (paced by fetchLimit, and
// shared fairly by the exchange's Remote).
func (n *Node) acrossWAN(pr member.Peer) bool { return pr.Cert.Site != n.cfg.Site }

// siblingKin puts this node's child relays at other sites in one kin of
// the blocks exchange (exchange.Config.Kin): a block sent across this
// node's link to one of them is taken by the others from that one. A
// relay that starts a fetch late, or after the others ended, then takes
// from its siblings what this node sent them, not from this node again.
func (n *Node) siblingKin(pr member.Peer) string {
	if pr.Cert.Parent == n.host.ID() && pr.Cert.Role == cert.RoleRelay && n.acrossWAN(pr) {
		return "relays"
	}
	return ""
}

// serveLimit paces what this node serves, all together, to nodes below its
// children that fetch from it because their own relay is down
// (wan.fallback_rate). Its children and its siblings are not paced.
func (n *Node) serveLimit() func(member.Peer) *ratelimit.Limiter {
	lim := ratelimit.New(float64(n.cfg.WAN.FallbackRate.Bytes), nil)
	if lim == nil {
		return nil
	}
	return func(pr member.Peer) *ratelimit.Limiter {
		if pr.Cert.Parent == n.host.ID() || (n.parent != "" && pr.Cert.Parent == n.parent) {
			return nil
		}
		return lim
	}
}
