// Package node assembles one swdist node from its home: the libp2p host,
// membership enforcement, the issuer for its children, the tree services,
// the database and the control API, and runs them until stopped.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/content/swarm"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/enroll"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/hierarchy/revoke"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/home"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/job"
	"github.com/swdist/swdist/node/store"
)

// Options are what the caller, not the config file, decides.
type Options struct {
	Logger *slog.Logger
	// NoAPI skips the control socket (in-process tests and benchmarks that
	// call the node's methods directly).
	NoAPI bool
	// OnManifest, if set, runs when this node accepts a new manifest
	// (benchmarks time delivery with it).
	OnManifest func(jobID string, forThisNode bool)
	// InventoryCollectors, if set, replace the machine's collectors
	// (benchmarks that simulate many machines in one process).
	InventoryCollectors []inventory.Collector
	// DB, if set, is the database instead of the config's db: a SQLite
	// file or a postgres:// URL ('swdist run --db').
	DB string
	// BlockTimeout bounds one request for blocks (0: 2 minutes; tests of
	// stalling peers shorten it).
	BlockTimeout time.Duration
	// PeerQuiet is how long a peer that owes this node blocks may send it
	// nothing before it is pinged, and half of how long it then has to
	// answer before it is given up (0: 5 seconds, see exchange.Config;
	// tests shorten it).
	PeerQuiet time.Duration
	// PeerStuck is how long a request for blocks waits for a peer that
	// sends nothing for it, neither blocks nor word that it waits for them
	// (0: 30 seconds, see exchange.Config.Stuck; tests shorten it).
	PeerStuck time.Duration
}

// Node is a running swdist node.
type Node struct {
	home    home.Home
	cfg     config.Config
	opts    Options
	key     crypto.PrivKey
	rootKey crypto.PrivKey // only on the root node
	log     *slog.Logger
	parent  peer.ID

	chain    atomic.Pointer[cert.Chain]
	verifier *cert.Verifier
	store    *store.Store
	blocks   *blocks.Store
	exchange *exchange.Service
	host     host.Host
	bw       *metrics.BandwidthCounter
	gater    *member.Gater
	member   *member.Service
	registry *tree.Registry
	viewer   *tree.Viewer
	issuer   *enroll.Issuer
	revs     *revoke.Set
	revoker  *revoke.Service
	gossip   *gossip.Service
	reports  *report.Service
	exec     *job.Executor
	inv      *inventory.Agent
	invCodec *inventory.Codec
	api      *api.Server

	mu         sync.Mutex
	invRefused map[string]int // inventory reports refused, by reason

	fetchMu  sync.Mutex
	fetching map[string]*claim  // blocks being fetched, by CID key
	wanted   map[string]int     // blocks this node fetches for itself, by CID key
	route    map[string]peer.ID // the peer each block being fetched for this node comes from
	swarm    *swarm.Service
	coll     collectState      // collect jobs' fetches (collect.go)
	gcMu     sync.Mutex        // one garbage collection at a time
	routings map[*routing]bool // fetches about to know their peers (fetch.go)
	upstream *upSlots          // requests in flight to the parent

	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
}

// dbDSN is the node's database: --db, else the config's db; a SQLite
// file's relative path is in the home. A URL of another scheme is left
// as it is, for store.Open to refuse.
func (n *Node) dbDSN() string {
	dsn := n.cfg.DB
	if n.opts.DB != "" {
		dsn = n.opts.DB
	}
	if store.IsPostgres(dsn) || store.CheckDSN(dsn) != nil {
		return dsn // store.Open says what is wrong with it
	}
	if path := store.SQLitePath(dsn); !filepath.IsAbs(path) {
		dsn = filepath.Join(n.home.Dir, path)
	}
	return dsn
}

// Open loads the node in h and builds its services; Start starts them.
func Open(ctx context.Context, h home.Home, opts Options) (_ *Node, err error) {
	if !h.Initialised() {
		return nil, fmt.Errorf("%s holds no node: create one with 'swdist init' or 'swdist join TOKEN' (or pass --home)", h.Dir)
	}
	if !opts.NoAPI && api.Answering(h.Socket()) {
		// Before anything else binds or opens: its ports, its database.
		return nil, fmt.Errorf("a daemon is already running on %s", h.Socket())
	}
	cfg, err := config.Load(h.Config())
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{home: h, cfg: cfg, log: log, opts: opts, invRefused: map[string]int{}, fetching: map[string]*claim{},
		wanted: map[string]int{}, route: map[string]peer.ID{}, routings: map[*routing]bool{}, upstream: newUpSlots(upstreamMax)}
	defer func() {
		if err != nil {
			n.Close() // whatever was opened before the error
		}
	}()
	if n.key, err = home.ReadKey(h.NodeKey()); err != nil {
		return nil, err
	}
	if cfg.Parent.ID == "" {
		if n.rootKey, err = home.ReadKey(h.RootKey()); err != nil {
			return nil, fmt.Errorf("this is the root node, but: %w", err)
		}
	} else if n.parent, err = peer.Decode(cfg.Parent.ID); err != nil {
		return nil, fmt.Errorf("config %s: parent.id: %w", h.Config(), err)
	}
	root, err := home.ReadPub(h.OrgPub())
	if err != nil {
		return nil, err
	}
	if n.verifier, err = cert.NewVerifier(root); err != nil {
		return nil, err
	}
	ch, err := home.ReadChain(h.Cert())
	if err != nil {
		return nil, err
	}
	n.chain.Store(&ch)
	if n.store, err = store.Open(ctx, n.dbDSN()); err != nil {
		return nil, err
	}
	if n.invCodec, err = inventory.NewCodec(); err != nil {
		return nil, err
	}
	if n.blocks, err = blocks.Open(h.Blocks()); err != nil {
		return nil, err
	}
	if n.revs, err = revoke.NewSet(ctx, n.store); err != nil {
		return nil, err
	}
	n.verifier.Revoked = n.revs.Check
	self, err := n.checkOwnChain(ch)
	if err != nil && !errors.Is(err, cert.ErrExpired) {
		return nil, fmt.Errorf("certificate %s: %w", h.Cert(), err)
	}
	if err != nil {
		// The root re-signs its own; anyone else must enroll again.
		if n.rootKey == nil {
			return nil, fmt.Errorf("certificate %s: %w: enroll this node again with a new token", h.Cert(), err)
		}
		log.Warn("own certificate expired; the root re-signs it at start", "err", err)
		if ch, err = n.selfIssue(); err != nil {
			return nil, err
		}
		if err := n.adopt(ch); err != nil {
			return nil, err
		}
		self, _ = ch.Leaf()
	}
	if string(self.Role) != cfg.Role || self.Site != cfg.Site {
		return nil, fmt.Errorf("config %s says %s at site %q but the certificate says %s at site %q: the certificate wins; fix the config",
			h.Config(), cfg.Role, cfg.Site, self.Role, self.Site)
	}
	n.gater = member.NewGater()
	n.bw = metrics.NewBandwidthCounter()
	if n.host, err = newHost(n.key, cfg.Listen, cfg.Limits, n.gater, n.bw); err != nil {
		return nil, err
	}
	n.member = member.New(n.host, n.gater, member.Config{
		Verifier: n.verifier, Chain: n.Chain, HelloTimeout: cfg.Tree.HelloTimeout.Duration, Logger: log,
		OnVerified: n.peerUp, OnDisconnected: n.peerDown,
	})
	if n.registry, err = tree.NewRegistry(ctx, n.host.ID(), n.store, log); err != nil {
		return nil, err
	}
	n.viewer = tree.NewViewer(n.host, tree.ViewConfig{Member: n.member, Registry: n.registry, Self: n.Cert, Logger: log})
	if self.Role.CanIssue() {
		n.issuer = enroll.NewIssuer(n.host, enroll.IssuerConfig{
			Key: n.key, Chain: n.Chain, Verifier: n.verifier, Tokens: n.store, Member: n.member,
			Lifetime: cfg.Enroll.CertLifetime.Duration, OnIssued: n.registry.Issued, Logger: log,
		})
	}
	n.revoker = revoke.New(n.host, revoke.Config{Key: n.key, Set: n.revs, Member: n.member,
		Neighbours: n.neighbours, OnChange: n.revocationsChanged, Logger: log})
	if !opts.NoAPI {
		if n.api, err = api.Listen(h.Socket(), n, log); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// checkOwnChain verifies this node's chain and that it names this node.
func (n *Node) checkOwnChain(ch cert.Chain) (cert.Cert, error) {
	certs, err := n.verifier.Verify(ch)
	if err != nil {
		return cert.Cert{}, err
	}
	id, err := peer.IDFromPrivateKey(n.key)
	if err != nil {
		return cert.Cert{}, err
	}
	if certs[0].PeerID != id {
		return cert.Cert{}, fmt.Errorf("certificate is for %s but keys/node.pem is %s", certs[0].PeerID, id)
	}
	return certs[0], nil
}

// selfIssue makes a fresh certificate for the root node, signed by the
// organisation key.
func (n *Node) selfIssue() (cert.Chain, error) {
	old, err := n.Chain().Leaf()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	old.NotBefore = now.Add(-cert.ClockSkew).Truncate(time.Second)
	old.NotAfter = now.Add(n.cfg.Enroll.CertLifetime.Duration).Truncate(time.Second)
	old.Serial = rand.Uint64()
	s, err := cert.Issue(old, n.rootKey)
	if err != nil {
		return nil, err
	}
	return cert.Chain{s}, nil
}

// adopt stores a new chain of this node and starts presenting it.
func (n *Node) adopt(ch cert.Chain) error {
	if err := home.WriteChain(n.home.Cert(), ch); err != nil {
		return err
	}
	n.chain.Store(&ch)
	if n.member != nil {
		n.member.Reannounce()
	}
	return nil
}

// selfCerts is this node's own chain, verified.
func (n *Node) selfCerts() []cert.Cert {
	certs, err := n.verifier.Verify(n.Chain())
	if err != nil {
		n.log.Error("this node's own chain does not verify", "err", err)
		c, _ := n.Chain().Leaf()
		return []cert.Cert{c}
	}
	return certs
}

// Chain is this node's current certificate chain.
func (n *Node) Chain() cert.Chain { return *n.chain.Load() }

// Cert is this node's own certificate.
func (n *Node) Cert() cert.Cert {
	c, _ := n.Chain().Leaf() // verified when adopted
	return c
}

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Start starts the node's services.
func (n *Node) Start(ctx context.Context) error {
	ctx, n.cancel = context.WithCancel(ctx)
	n.started = time.Now()
	n.member.Start()
	n.viewer.Start()
	n.revoker.Start()
	if n.issuer != nil {
		n.issuer.Start()
	}
	rcfg := report.Config{Member: n.member, Outbox: n.store, Parent: n.parent, FromSubtree: n.fromSubtree, Logger: n.log}
	if n.issuer != nil {
		rcfg.Sink = n.applyReports
	}
	n.exchange = exchange.New(n.host, exchange.Config{Member: n.member, Store: n.blocks, Upstream: n.serveUpstream,
		FetchLimit: n.fetchLimit(), ServeLimit: n.serveLimit(), Timeout: n.opts.BlockTimeout, Logger: n.log,
		Remote: n.acrossWAN, Kin: n.siblingKin, BytesIn: n.bytesFrom, Quiet: n.opts.PeerQuiet, Stuck: n.opts.PeerStuck,
		MayGiveUp: n.mayGiveUp})
	n.exchange.Start()
	n.startCollect(ctx)
	n.swarm = swarm.New(n.host, swarm.Config{Member: n.member, Parent: n.parent, ParentAddrs: n.parentAddrs(), Logger: n.log})
	if n.issuer != nil {
		n.swarm.Start()
	}
	n.reports = report.New(n.host, rcfg)
	n.reports.Start()
	n.goRun(ctx, "reports", n.reports.Run)
	n.goRun(ctx, "block store budget", n.gcLoop)
	n.exec = job.New(ctx, job.Config{Report: n.reportStatus, Runs: n.store, Logger: n.log, MaxConcurrent: n.cfg.Jobs.MaxConcurrent,
		Builtin: map[string]job.Builtin{"inventory": n.inventoryJob, "install": n.installJob, "uninstall": n.uninstallJob,
			"transfer": n.transferJob, "delete": n.deleteJob, "collect": n.collectJob}})
	gcfg := gossip.Config{Verifier: n.verifier, Self: n.selfCerts, Parent: n.parent, Member: n.member, Store: n.store, Logger: n.log,
		Below: n.targetsBelow,
		OnAccepted: func(v gossip.Verified, forMe bool) {
			if v.Type == gossip.TypeCancel {
				n.cancelJob(ctx, v) // never run: it is carried out here
			} else {
				if n.issuer != nil {
					n.markWaiting(ctx, v)
					if v.Package != nil && n.parent != "" && (v.Type == "install" || v.Type == "transfer") {
						n.prefetch(ctx, v)
					}
				}
				if forMe {
					n.applyEarlierCancels(ctx, v)
					n.exec.Take(v.Manifest)
				}
			}
			if f := n.opts.OnManifest; f != nil {
				f(v.JobID, forMe)
			}
		},
		OnExpired: func(v gossip.Verified) { n.exec.Missed(v.Manifest) }}
	g, err := gossip.New(ctx, n.host, gcfg)
	if err != nil {
		return err
	}
	n.gossip = g
	if err := n.recoverInstalls(ctx); err != nil {
		return fmt.Errorf("recover interrupted installs: %w", err)
	}
	if err := n.exec.Recover(func(id string) (gossip.Manifest, error) {
		m, _, err := n.heldManifest(ctx, id)
		return m, err
	}); err != nil {
		return err
	}
	if n.issuer != nil {
		g.StartSync()
		n.serveAdminRequests()
	}
	n.goRun(ctx, "renewer", enroll.NewRenewer(enroll.RenewerConfig{
		Chain: n.Chain, Renew: n.renew, Adopt: n.adopt, Logger: n.log,
		Verify: func(ch cert.Chain) error { _, err := n.checkOwnChain(ch); return err },
	}).Run)
	if n.parent != "" {
		link := tree.NewLink(n.host, tree.LinkConfig{
			Parent: n.parent, Addrs: n.parentAddrs(), Member: n.member, Logger: n.log,
			MinBackoff: n.cfg.Tree.ReconnectMin.Duration, MaxBackoff: n.cfg.Tree.ReconnectMax.Duration,
			OnUp: func(ctx context.Context, pr member.Peer) {
				n.reports.Reconnected()
				if err := n.revoker.Sync(ctx, pr.ID); err != nil {
					n.log.Warn("sync revocations with parent", "err", err)
				}
				if err := n.swarm.LearnAncestors(ctx); err != nil {
					n.log.Debug("learn ancestors", "err", err)
				}
				if got, err := n.gossip.CatchUp(ctx); err != nil {
					n.log.Warn("catch up on manifests", "err", err)
				} else if got > 0 {
					n.log.Info("caught up on manifests", "new", got)
				}
			},
		})
		n.goRun(ctx, "parent link", link.Run)
		n.goRun(ctx, "manifest catch-up", n.catchUpLoop)
	}
	n.startInventory(ctx)
	if n.api != nil {
		n.goRun(ctx, "control API", n.api.Serve)
	}
	n.log.Info("node started", "peer", n.host.ID(), "role", n.cfg.Role, "site", n.cfg.Site, "addrs", n.host.Addrs())
	return nil
}

// parentAddrs are the parent's addresses from the config.
func (n *Node) parentAddrs() []ma.Multiaddr {
	var addrs []ma.Multiaddr
	for _, a := range n.cfg.Parent.Addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			addrs = append(addrs, m)
		}
	}
	return addrs
}

func (n *Node) goRun(ctx context.Context, name string, f func(context.Context) error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f(ctx); err != nil {
			n.log.Error(name+" stopped", "err", err)
		}
	}()
}

// catchUpLoop asks the parent for missed manifests now and then, besides
// at every link-up: a manifest the parent republished while this node was
// linking up (before its subscription was known) is caught here.
func (n *Node) catchUpLoop(ctx context.Context) error {
	for {
		wait := n.cfg.Tree.CatchUpEvery.Duration/2 + rand.N(n.cfg.Tree.CatchUpEvery.Duration)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if _, ok := n.member.Peer(n.parent); !ok {
			continue
		}
		if got, err := n.gossip.CatchUp(ctx); err != nil {
			n.log.Debug("periodic catch-up", "err", err)
		} else if got > 0 {
			n.log.Info("caught up on manifests", "new", got)
		}
	}
}

func (n *Node) renew(ctx context.Context) (cert.Chain, error) {
	if n.rootKey != nil {
		return n.selfIssue()
	}
	return enroll.Renew(ctx, n.host, n.parent)
}

// Run starts the node and runs it until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return n.Close()
}

// Close stops every service and closes the host and the database.
func (n *Node) Close() error {
	if n.closed {
		return nil
	}
	n.closed = true
	if n.cancel != nil {
		n.cancel()
	}
	if n.api != nil {
		n.api.Close()
	}
	n.wg.Wait()
	if n.exec != nil {
		n.exec.Wait()
	}
	var errs []error
	if n.member != nil {
		if n.issuer != nil {
			n.issuer.Close()
		}
		n.viewer.Close()
		n.revoker.Close()
		if n.gossip != nil {
			n.gossip.Close()
		}
		if n.reports != nil {
			n.reports.Close()
		}
		if n.exchange != nil {
			n.exchange.Close()
			n.swarm.Close()
		}
		n.member.Close()
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	if n.blocks != nil {
		errs = append(errs, n.blocks.Close())
	}
	return errors.Join(errs...)
}

func (n *Node) peerUp(pr member.Peer) {
	if n.registry.Up(pr.Cert, n.host.Peerstore().Addrs(pr.ID)) {
		n.host.ConnManager().Protect(pr.ID, "child")
	}
}

func (n *Node) peerDown(p peer.ID) {
	n.registry.Down(p, n.host.Peerstore().Addrs(p))
	n.host.ConnManager().Unprotect(p, "child")
}

// neighbours are the tree links: the parent and the connected children.
func (n *Node) neighbours() []peer.ID {
	var out []peer.ID
	for _, pr := range n.member.Peers() {
		if pr.ID == n.parent || pr.Cert.Parent == n.host.ID() {
			out = append(out, pr.ID)
		}
	}
	return out
}

// revocationsChanged drops every peer that is now revoked and marks
// revoked children in the registry.
func (n *Node) revocationsChanged() {
	n.member.Recheck()
	own, err := n.verifier.Verify(n.Chain())
	if err != nil {
		n.log.Error("this node's own chain no longer verifies", "err", err)
		return
	}
	for _, c := range n.registry.List() {
		if c.Revoked {
			continue
		}
		certs := append([]cert.Cert{{PeerID: c.PeerID, Parent: n.host.ID()}}, own...)
		if n.revs.Check(certs) != nil {
			n.registry.Revoked(c.PeerID)
		}
	}
}
