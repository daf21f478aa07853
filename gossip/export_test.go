package gossip

import "context"

// PublishUnchecked publishes raw on this node's own topic without any
// check: what a compromised managing node would do. Tests only.
func (s *Service) PublishUnchecked(ctx context.Context, raw []byte) error {
	return s.own.Publish(ctx, raw)
}
