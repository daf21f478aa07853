package node

import (
	"context"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/store"
)

// SubmitJob takes a manifest signed by an administrator on this managing
// node: it is checked as every node checks it, stored, and sent into this
// node's subtree.
func (n *Node) SubmitJob(ctx context.Context, raw []byte) (gossip.Verified, error) {
	if n.issuer == nil {
		return gossip.Verified{}, api.BadRequest("this node is a client: submit jobs on a server or relay")
	}
	v, err := n.gossip.Accept(ctx, raw)
	if err != nil {
		return gossip.Verified{}, api.BadRequest("job refused: %v", err)
	}
	return v, nil
}

// Jobs lists the manifests this node holds.
func (n *Node) Jobs(ctx context.Context) ([]store.Job, error) { return n.store.Jobs(ctx) }

// GossipRejected counts the manifests this node refused, by reason.
func (n *Node) GossipRejected() map[string]int { return n.gossip.Rejected() }
