package node

import (
	"context"

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
