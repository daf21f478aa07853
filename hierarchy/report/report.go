// Package report carries results up the tree. A node writes each report to
// a durable outbox before sending it; a pump sends the outbox to the parent
// in batches and deletes what the parent acknowledged. The parent applies a
// batch (durably, idempotently: a report has an id, and applying it twice
// changes nothing) before it acknowledges, and a relay puts what it applied
// into its own outbox for its parent. Nothing is lost when any node
// restarts, and nothing is counted twice.
package report

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
)

// Protocol sends a batch of reports to the parent.
const Protocol protocol.ID = "/swdist/report/1.0.0"

// Limits on a batch: what one request may carry.
const (
	MaxBatch     = 1000
	MaxBodyBytes = 1 << 20 // a full inventory, compressed, fits
	// maxBatchBytes bounds a batch on the wire; the sender fills batches
	// to sendBatchBytes so that a batch of large reports always fits.
	maxBatchBytes  = 8 << 20
	sendBatchBytes = 4 << 20
)

// Report is one fact about one node, for the managing nodes above it.
type Report struct {
	// ID makes applying the report idempotent: the same fact, sent twice
	// (after a lost acknowledgement), has the same ID.
	ID     string  `cbor:"0,keyasint"`
	Origin peer.ID `cbor:"1,keyasint"`
	Kind   string  `cbor:"2,keyasint"`
	At     int64   `cbor:"3,keyasint"` // unix milliseconds
	Body   []byte  `cbor:"4,keyasint"`
}

// Outbox is the durable queue of reports to send up.
type Outbox interface {
	// Peek returns up to limit queued reports, oldest first, with the
	// outbox position of each.
	Peek(ctx context.Context, limit int) ([]Queued, error)
	// Done deletes the reports at the given positions.
	Done(ctx context.Context, positions []int64) error
}

// Queued is a report in the outbox.
type Queued struct {
	Pos    int64
	Report Report
}

// Sink applies reports that arrive from children. It must be durable and
// idempotent by report ID before it returns, and a relay's sink must also
// queue them in its own outbox for its parent.
type Sink func(ctx context.Context, from peer.ID, reports []Report) error

type batch struct {
	Reports []Report `cbor:"0,keyasint"`
}

type ack struct {
	Applied int `cbor:"0,keyasint"`
}

// Config configures a Service.
type Config struct {
	Member *member.Service
	Outbox Outbox
	Parent peer.ID // empty on the root: nothing is sent
	// Sink, on a managing node, applies children's reports.
	Sink Sink
	// FromSubtree reports whether origin may be reported by child from:
	// the child itself, or, for a relay, a node of its subtree.
	FromSubtree func(from, origin peer.ID) bool
	// Linger is how long the sender waits, once woken by a new report,
	// for the ones that come with it (a job's received and scheduled, the
	// reports of many children at once) to go in the same batch: fewer
	// messages up the tree, and none in the middle of a burst of work
	// (default 200ms).
	Linger time.Duration
	Logger *slog.Logger
}

// Service sends this node's outbox up and receives its children's reports.
type Service struct {
	h     host.Host
	cfg   Config
	log   *slog.Logger
	wake  chan struct{}
	retry chan struct{} // the parent link came up again

	batches, reports atomic.Int64 // received from children
}

// Received counts the batches and reports children sent and this node
// applied.
func (s *Service) Received() (batches, reports int) {
	return int(s.batches.Load()), int(s.reports.Load())
}

// New makes a Service; Start registers the protocol, Run pumps the outbox.
func New(h host.Host, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Linger == 0 {
		cfg.Linger = 200 * time.Millisecond
	}
	return &Service{h: h, cfg: cfg, log: cfg.Logger.With("svc", "report"), wake: make(chan struct{}, 1), retry: make(chan struct{}, 1)}
}

// Start serves the report protocol to this node's children.
func (s *Service) Start() {
	if s.cfg.Sink == nil {
		return
	}
	s.h.SetStreamHandler(Protocol, s.cfg.Member.Guard(func(pr member.Peer, str network.Stream) {
		if pr.Cert.Parent != s.h.ID() {
			_ = str.Reset()
			return
		}
		_ = wire.Serve(str, maxBatchBytes, func(b batch) (ack, error) {
			if len(b.Reports) > MaxBatch {
				return ack{}, fmt.Errorf("batch of %d reports, at most %d", len(b.Reports), MaxBatch)
			}
			for _, r := range b.Reports {
				if len(r.Body) > MaxBodyBytes || r.ID == "" || r.Kind == "" {
					return ack{}, fmt.Errorf("report %q refused: empty id or kind, or body over %d bytes", r.ID, MaxBodyBytes)
				}
				if !s.cfg.FromSubtree(pr.ID, r.Origin) {
					return ack{}, fmt.Errorf("report %q about %s refused: not in the subtree of %s", r.ID, r.Origin, pr.ID)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := s.cfg.Sink(ctx, pr.ID, b.Reports); err != nil {
				s.log.Error("apply reports", "from", pr.ID, "err", err)
				return ack{}, errors.New("parent could not store the reports; they will be sent again")
			}
			s.batches.Add(1)
			s.reports.Add(int64(len(b.Reports)))
			return ack{Applied: len(b.Reports)}, nil
		})
	}))
}

// Close removes the protocol.
func (s *Service) Close() { s.h.RemoveStreamHandler(Protocol) }

// Wake tells the pump that the outbox has new reports.
func (s *Service) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Reconnected tells the sender that the link to the parent is up again: a
// send that failed is tried again now, not at the end of its backoff.
func (s *Service) Reconnected() {
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// Run sends the outbox to the parent until ctx ends: a batch at a time,
// each deleted only once acknowledged; on failure it waits, jittered.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Parent == "" {
		return nil
	}
	fail := 0
	for {
		sent, err := s.sendOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			fail++
			wait := time.Duration(rand.Int64N(int64(min(time.Minute, time.Second<<min(fail, 6)))))
			s.log.Debug("send reports", "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return nil
			case <-s.retry:
			case <-time.After(wait):
			}
		case sent == 0:
			fail = 0
			select { // idle: wait for new reports, and look again now and then
			case <-ctx.Done():
				return nil
			case <-s.wake:
				select { // linger for the reports that come with this one
				case <-ctx.Done():
					return nil
				case <-time.After(s.cfg.Linger):
				}
			case <-time.After(30 * time.Second):
			}
		default:
			fail = 0
		}
	}
}

func (s *Service) sendOnce(ctx context.Context) (int, error) {
	queued, err := s.cfg.Outbox.Peek(ctx, MaxBatch)
	if err != nil || len(queued) == 0 {
		return 0, err
	}
	if _, ok := s.cfg.Member.Peer(s.cfg.Parent); !ok {
		return 0, errors.New("parent not connected")
	}
	var reports []Report
	var pos []int64
	size := 0
	for _, q := range queued {
		size += len(q.Report.Body) + len(q.Report.ID) + len(q.Report.Kind) + 64
		if len(reports) > 0 && size > sendBatchBytes {
			break // the rest go in the next batch
		}
		reports, pos = append(reports, q.Report), append(pos, q.Pos)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	str, err := s.h.NewStream(network.WithNoDial(cctx, "parent link"), s.cfg.Parent, Protocol)
	if err != nil {
		return 0, fmt.Errorf("open report stream: %w", err)
	}
	a, err := wire.Call[batch, ack](str, batch{Reports: reports}, 1024)
	if err != nil {
		return 0, fmt.Errorf("send %d reports: %w", len(reports), err)
	}
	if a.Applied != len(reports) {
		return 0, fmt.Errorf("parent applied %d of %d reports", a.Applied, len(reports))
	}
	if err := s.cfg.Outbox.Done(ctx, pos); err != nil {
		return 0, fmt.Errorf("clear sent reports: %w", err)
	}
	return len(reports), nil
}
