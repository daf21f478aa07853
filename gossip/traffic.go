package gossip

import (
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Traffic counts manifest copies this node received and sent through
// gossipsub, duplicates included: what the tree's shape costs each node.
type Traffic struct {
	Received int64 `json:"received"`
	Sent     int64 `json:"sent"`
}

// counter is a pubsub tracer that counts published messages on the wire.
type counter struct{ recv, sent atomic.Int64 }

var _ pubsub.RawTracer = (*counter)(nil)

func (c *counter) RecvRPC(rpc *pubsub.RPC)                              { c.recv.Add(int64(len(rpc.GetPublish()))) }
func (c *counter) SendRPC(rpc *pubsub.RPC, _ peer.ID)                   { c.sent.Add(int64(len(rpc.GetPublish()))) }
func (c *counter) AddPeer(peer.ID, protocol.ID)                         {}
func (c *counter) RemovePeer(peer.ID)                                   {}
func (c *counter) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (c *counter) OnClosedOutboundStream(peer.ID)                       {}
func (c *counter) Join(string)                                          {}
func (c *counter) Leave(string)                                         {}
func (c *counter) Graft(peer.ID, string)                                {}
func (c *counter) Prune(peer.ID, string)                                {}
func (c *counter) ValidateMessage(*pubsub.Message)                      {}
func (c *counter) DeliverMessage(*pubsub.Message)                       {}
func (c *counter) RejectMessage(*pubsub.Message, string)                {}
func (c *counter) DuplicateMessage(*pubsub.Message)                     {}
func (c *counter) ThrottlePeer(peer.ID)                                 {}
func (c *counter) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (c *counter) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (c *counter) UndeliverableMessage(*pubsub.Message)                 {}

// Traffic returns the counts since the node started.
func (s *Service) Traffic() Traffic {
	return Traffic{Received: s.traffic.recv.Load(), Sent: s.traffic.sent.Load()}
}
