package node

import (
	"context"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/report"
)

// ApplyReportsFrom hands reports to this node as if child from had sent
// them over the report protocol (whose framing is tested on its own).
func (n *Node) ApplyReportsFrom(ctx context.Context, from peer.ID, rs []report.Report) error {
	return n.applyReports(ctx, from, rs)
}

// EndgameShare is the share of a package a node and its peers may take
// from upstream at the end, beyond the package once.
const EndgameShare = endgameShare

// ServeBlocks registers this node's blocks handlers again (after a test
// replaced them).
func (n *Node) ServeBlocks() { n.exchange.Start() }

// CopyBlock puts block c of node from's store into this node's.
func (n *Node) CopyBlock(ctx context.Context, from *Node, c cid.Cid) error {
	data, err := from.blocks.Get(ctx, c)
	if err != nil {
		return err
	}
	return n.blocks.Put(ctx, c, data)
}

// GaveUp counts the times this node gave each peer up for not answering.
func (n *Node) GaveUp() map[peer.ID]int { return n.exchange.GaveUp() }

// KnowsAncestors says whether this node has learnt, from its parent, the
// ancestors it would fall back to.
func (n *Node) KnowsAncestors() bool { return len(n.swarm.Ancestors()) > 0 }
