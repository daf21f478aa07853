package gossip

import (
	"context"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// SyncProtocol lets a child fetch, page by page, the manifests its parent
// holds after a cursor: what it missed while it was away.
const SyncProtocol protocol.ID = "/swdist/sync/1.0.0"

// SyncPage is the most manifests one answer carries.
const SyncPage = 64

type syncReq struct {
	After int64 `cbor:"0,keyasint"`
}

type syncResp struct {
	Items []Stored `cbor:"0,keyasint"`
	More  bool     `cbor:"1,keyasint"`
}

// StartSync serves the sync protocol to this node's children.
func (s *Service) StartSync() {
	s.h.SetStreamHandler(SyncProtocol, s.cfg.Member.Guard(func(pr member.Peer, str network.Stream) {
		if pr.Cert.Parent != s.self {
			_ = str.Reset()
			return
		}
		_ = wire.Serve(str, 64, func(req syncReq) (syncResp, error) {
			items, err := s.cfg.Store.ManifestsAfter(context.Background(), req.After, SyncPage+1)
			if err != nil {
				s.log.Error("read manifests for sync", "err", err)
				return syncResp{}, errors.New("parent could not read its manifests")
			}
			more := len(items) > SyncPage
			if more {
				items = items[:SyncPage]
			}
			return syncResp{Items: items, More: more}, nil
		})
	}))
}

// CatchUp asks the parent for every manifest after the last one this node
// got from it, and accepts each as if it had come by gossip. It returns how
// many were new.
func (s *Service) CatchUp(ctx context.Context) (int, error) {
	parent := s.cfg.Parent
	cursor, err := s.cfg.Store.SyncCursor(ctx, parent)
	if err != nil {
		return 0, err
	}
	got := 0
	for {
		str, err := s.h.NewStream(network.WithNoDial(ctx, "parent link"), parent, SyncProtocol)
		if err != nil {
			return got, fmt.Errorf("open sync with parent %s: %w", parent, err)
		}
		resp, err := wire.Call[syncReq, syncResp](str, syncReq{After: cursor}, (SyncPage+1)*MaxManifestBytes)
		if err != nil {
			return got, fmt.Errorf("sync with parent %s: %w", parent, err)
		}
		last := cursor
		for _, it := range resp.Items {
			if it.Cursor <= last {
				return got, fmt.Errorf("sync with parent %s: cursor went back from %d to %d", parent, last, it.Cursor)
			}
			last = it.Cursor
		}
		// Cancels first: a node that was offline gets a job and its cancel
		// together, and the job must not start before the cancel is known.
		var cancels, others [][]byte
		for _, it := range resp.Items {
			if m, _, err := Describe(it.Raw); err == nil && m.Type == TypeCancel {
				cancels = append(cancels, it.Raw)
			} else {
				others = append(others, it.Raw)
			}
		}
		for _, raw := range append(cancels, others...) {
			if _, err := s.Accept(ctx, raw); err == nil {
				got++
			}
		}
		cursor = last
		if err := s.cfg.Store.SetSyncCursor(ctx, parent, cursor); err != nil {
			return got, err
		}
		if !resp.More {
			return got, nil
		}
	}
}
