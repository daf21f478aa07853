package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/content/swarm"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/node/store"
)

// How a node fetches a package for itself.
const (
	groupSize   = 2                      // blocks per request: small, so that the last blocks do not wait behind deep requests
	maxGroups   = 16                     // requests in flight
	perPeer     = 8                      // requests in flight to one peer: enough to keep a WAN link busy with requests of groupSize
	peersEvery  = 500 * time.Millisecond // how often the parent is asked again for peers while fetching
	ancestorTry = 10 * time.Second       // how long to try reaching an ancestor
	routeWait   = 3 * time.Second        // how long a child's request waits for this node's own fetch to know its peers
	upstreamMax = 4                      // requests in flight to the parent (or an ancestor)
	meetWait    = 2 * time.Second        // how long the peer with the higher ID waits for the other to dial
	// A block upstream lacked is asked for again this many times, this
	// long apart, before the fetch fails.
	upstreamRetries   = 3
	upstreamRetryWait = time.Second
	// endgameShare of the package, shared among a node and its peers, may
	// come from upstream at the end instead of from the peers that own it.
	// The parent's link then carries about 1.04 times the package in
	// stream bytes, 1.09 times on the wire (QUIC, UDP, IP and Ethernet
	// headers), within the 1.1 the root may serve.
	endgameShare = 0.04
	peerRetryFor = 3 * time.Second        // how long a peer whose requests fail at once is asked again before it is dropped
	peerHoldOff  = 300 * time.Millisecond // how long after such a failure it is asked again
)

// A claim marks a block being fetched by this node; done closes when the
// fetch ends, however it ended.
type claim struct {
	done       chan struct{}
	fromParent bool // from the parent (or an ancestor), not from a peer
}

// claimBlocks splits cids into those the caller must now fetch (claimed
// for it) and the claims of fetches already under way that it should wait
// for. A caller serving a peer that is not its child waits only for
// fetches from the parent: waiting for a fetch from a peer could wait for
// itself in a cycle of peers that disagree on who owns a block.
func (n *Node) claimBlocks(cids []cid.Cid, fromParent, anyClaim bool) (mine []cid.Cid, theirs []chan struct{}) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	for _, c := range cids {
		if cl, ok := n.fetching[c.KeyString()]; ok && (anyClaim || cl.fromParent) {
			theirs = append(theirs, cl.done)
			continue
		} else if ok {
			mine = append(mine, c) // fetched twice: the other fetch keeps its claim
			continue
		}
		n.fetching[c.KeyString()] = &claim{done: make(chan struct{}), fromParent: fromParent}
		mine = append(mine, c)
	}
	return mine, theirs
}

func (n *Node) releaseBlocks(cids []cid.Cid) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	for _, c := range cids {
		if cl, ok := n.fetching[c.KeyString()]; ok {
			close(cl.done)
			delete(n.fetching, c.KeyString())
		}
	}
}

func waitAll(ctx context.Context, chans []chan struct{}) error {
	for _, ch := range chans {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// absent are the cids not in the blockstore.
func (n *Node) absent(ctx context.Context, cids []cid.Cid) ([]cid.Cid, error) {
	var out []cid.Cid
	for _, c := range cids {
		ok, err := n.blocks.Has(ctx, c)
		if err != nil {
			return nil, err
		}
		if !ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// serveUpstream runs when a peer asks this node for blocks it does not
// hold. A managing node fetches them from its parent for its children and
// for sibling relays; a client only for blocks it is fetching itself (a
// peer at its site whose share they are), never as a proxy for others.
func (n *Node) serveUpstream(ctx context.Context, from member.Peer, cids []cid.Cid) error {
	if n.parent == "" {
		return nil
	}
	if n.issuer == nil {
		n.fetchMu.Lock()
		cids = slices.DeleteFunc(slices.Clone(cids), func(c cid.Cid) bool { return n.wanted[c.KeyString()] == 0 })
		n.fetchMu.Unlock()
	}
	if len(cids) == 0 {
		return nil
	}
	if from.Cert.Parent != n.host.ID() {
		return n.pullThrough(ctx, cids, pull{})
	}
	// This node's own fetch of the package may be about to learn its peers:
	// wait for that, so that a child's first requests go where this node's
	// own would, not all to the parent.
	n.waitRoutes(ctx, routeWait)
	// A child's blocks that this node is fetching from a peer right now are
	// taken from that peer too, not from the parent a second time.
	viaPeer := map[peer.ID][]cid.Cid{}
	var viaParent []cid.Cid
	n.fetchMu.Lock()
	for _, c := range cids {
		if o := n.route[c.KeyString()]; o != "" {
			viaPeer[o] = append(viaPeer[o], c)
		} else {
			viaParent = append(viaParent, c)
		}
	}
	n.fetchMu.Unlock()
	for o, group := range viaPeer {
		if err := n.fetchGroup(ctx, o, group, false); err != nil {
			viaParent = append(viaParent, group...)
		} else if left, err := n.absent(ctx, group); err == nil {
			viaParent = append(viaParent, left...)
		}
	}
	if len(viaParent) == 0 {
		return nil
	}
	return n.pullThrough(ctx, viaParent, pull{forChild: true})
}

// A pull says whom a pull-through is for and how it asks.
type pull struct {
	// forChild: the asker is a child of this node, which may wait for any
	// fetch (see claimBlocks).
	forChild bool
	// own: this node's own fetch, which waits for a request slot after
	// those for others (see upSlots).
	own bool
	// force: the blocks are taken from the parent even where it would
	// point to a sibling that has them (exchange.FetchForce).
	force bool
}

// pullThrough fetches from the parent the blocks of cids not being fetched
// already, and waits for those that are: each block is asked for once
// however many ask for it at the same time.
func (n *Node) pullThrough(ctx context.Context, cids []cid.Cid, how pull) error {
	// A few requests at a time: a relay's own fetch, its children's and its
	// siblings' all go up this link, and fewer blocks in flight each come
	// sooner, to be passed on while the rest arrive. The slot is taken
	// before the blocks are claimed, so that a claim is always a fetch
	// under way, never one waiting behind others.
	if err := n.upstream.acquire(ctx, !how.own); err != nil {
		return err
	}
	mine, theirs := n.claimBlocks(cids, true, how.forChild)
	// Blocks fetched since the caller looked are not fetched again.
	need, err := n.absent(ctx, mine)
	var missing []cid.Cid
	if err == nil && len(need) > 0 {
		missing, err = n.fromUpstream(ctx, need, how.force)
	}
	n.releaseBlocks(mine)
	n.upstream.release()
	if werr := waitAll(ctx, theirs); werr != nil {
		return werr
	}
	if err == nil && len(theirs) > 0 {
		// Another fetch this one waited for may have failed (a peer that
		// went away): what it did not bring is fetched from upstream now.
		if left, aerr := n.absent(ctx, cids); aerr == nil && len(left) > 0 {
			// Its own slot, taken before the claim as above.
			if err = n.upstream.acquire(ctx, !how.own); err == nil {
				again, _ := n.claimBlocks(left, true, false)
				if len(again) > 0 {
					var m2 []cid.Cid
					m2, err = n.fromUpstream(ctx, again, true)
					missing = append(missing, m2...)
				}
				n.releaseBlocks(again)
				n.upstream.release()
			}
		}
	}
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("%d of %d blocks not found at the parent", len(missing), len(cids))
	}
	return err
}

// fromUpstream fetches cids from the parent (see pullThrough for force)
// or, while the parent is not reachable or is passed over (passOver),
// from the nearest ancestor that is (they serve nodes that are not their
// children at a limited rate).
func (n *Node) fromUpstream(ctx context.Context, cids []cid.Cid, force bool) ([]cid.Cid, error) {
	givenUp := n.passOver(n.parent)
	if _, ok := n.member.Peer(n.parent); !ok && !givenUp {
		if left := ancestorTry - time.Since(n.started); left > 0 {
			// Just started: the parent link may not be up yet.
			n.waitVerified(ctx, n.parent, left)
		}
	}
	if _, ok := n.member.Peer(n.parent); ok && !givenUp {
		if force {
			return n.exchange.FetchForce(ctx, n.parent, cids)
		}
		return n.exchange.Fetch(ctx, n.parent, cids)
	}
	errs := []error{fmt.Errorf("parent %s is not connected, or does not answer", n.parent)}
	for _, a := range n.swarm.Ancestors() {
		if _, ok := n.member.Peer(a.ID); !ok {
			actx, cancel := context.WithTimeout(ctx, ancestorTry)
			err := n.host.Connect(actx, a)
			if err == nil {
				_, err = n.member.Wait(actx, a.ID)
			}
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("ancestor %s: %w", a.ID, err))
				continue
			}
		}
		n.log.Info("parent down: fetching blocks from an ancestor", "ancestor", a.ID, "blocks", len(cids))
		return n.exchange.Fetch(ctx, a.ID, cids)
	}
	return cids, fmt.Errorf("no upstream reachable: %w", errors.Join(errs...))
}

// passOver says whether peer p is not to be asked for blocks for now: it
// was given up for not answering and not heard from since, or a request
// to it got stuck (it sent nothing, not even word that it waits) within
// the last minute.
func (n *Node) passOver(p peer.ID) bool { return n.exchange.GivenUp(p) || n.exchange.WasStuck(p) }

// bytesFrom is all that this node received from p since it started, on
// any protocol (libp2p's meters, updated once a second).
func (n *Node) bytesFrom(p peer.ID) int64 { return n.bw.GetBandwidthForPeer(p).TotalIn }

// mayGiveUp says whether this node may give up peer p, which owes it
// blocks and stopped answering (exchange.Config.MayGiveUp): any peer but
// its parent, and the parent only when there is an ancestor to fetch from
// instead.
func (n *Node) mayGiveUp(p peer.ID) bool { return p != n.parent || len(n.swarm.Ancestors()) > 0 }

// A routing is a fetch of this node's that will soon know which peer each
// of its blocks comes from (setRoute); known closes when it does, or when
// the fetch ends.
type routing struct {
	once  sync.Once
	known chan struct{}
}

type routingKey struct{}

// expectRoutes registers a fetch about to start; ctx carries it to the
// fetch (getBlocks), which calls routesKnown once it has its peers.
func (n *Node) expectRoutes(ctx context.Context) (context.Context, *routing) {
	r := &routing{known: make(chan struct{})}
	n.fetchMu.Lock()
	n.routings[r] = true
	n.fetchMu.Unlock()
	return context.WithValue(ctx, routingKey{}, r), r
}

func (n *Node) routesKnown(r *routing) {
	if r == nil {
		return
	}
	r.once.Do(func() {
		n.fetchMu.Lock()
		delete(n.routings, r)
		n.fetchMu.Unlock()
		close(r.known)
	})
}

// waitRoutes waits, at most max, until the fetches registered now know
// their peers.
func (n *Node) waitRoutes(ctx context.Context, max time.Duration) {
	n.fetchMu.Lock()
	var pending []chan struct{}
	for r := range n.routings {
		pending = append(pending, r.known)
	}
	n.fetchMu.Unlock()
	if len(pending) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	_ = waitAll(ctx, pending)
}

// fetchPackage makes sure every block of the package root is held here:
// the root block from upstream, then the chunks from upstream and from
// this node's peers for the package (see getBlocks).
//
// progress, if not nil, is told the bytes of the package's chunks held
// here and their total: once the root is read, then as blocks arrive.
func (n *Node) fetchPackage(ctx context.Context, root cid.Cid, progress func(held, total int64)) (pkg.Root, error) {
	if progress == nil {
		progress = func(int64, int64) {}
	}
	n.want([]cid.Cid{root}, 1) // kept from garbage collection until the chunks are in
	defer n.want([]cid.Cid{root}, -1)
	if ok, err := n.blocks.Has(ctx, root); err != nil {
		return pkg.Root{}, err
	} else if !ok {
		if n.parent == "" {
			return pkg.Root{}, fmt.Errorf("package %s is not held here, and this node has no parent to fetch it from", root)
		}
		err := n.pullThrough(ctx, []cid.Cid{root}, pull{})
		if err != nil && n.passOver(n.parent) {
			// The parent stopped answering, or its answer got stuck, while
			// it was asked: once more, from an ancestor.
			err = n.pullThrough(ctx, []cid.Cid{root}, pull{})
		}
		if err != nil {
			return pkg.Root{}, fmt.Errorf("fetch package %s: %w", root, err)
		}
	}
	r, err := pkg.ReadRoot(ctx, n.blocks, root)
	if err != nil {
		return pkg.Root{}, err
	}
	missing, err := pkg.Missing(ctx, n.blocks, r)
	if err != nil {
		return r, err
	}
	size := map[string]int64{}
	var total int64
	for i, c := range r.Chunks {
		if k := r.ChunkCID(i).KeyString(); size[k] == 0 { // a chunk twice in the package is held once
			size[k] = int64(c.Stored)
			total += int64(c.Stored)
		}
	}
	held := total
	for _, c := range missing {
		held -= size[c.KeyString()]
	}
	progress(held, total)
	if len(missing) == 0 {
		return r, nil
	}
	if n.parent == "" {
		return pkg.Root{}, fmt.Errorf("package %s@%s (%s): %d blocks are missing here, and this node has no parent to fetch them from", r.Name, r.Version, root, len(missing))
	}
	arrived := func(got []cid.Cid) {
		for _, c := range got {
			held += size[c.KeyString()]
		}
		progress(held, total)
	}
	if err := n.getBlocks(ctx, root, r, missing, arrived); err != nil {
		return pkg.Root{}, fmt.Errorf("fetch package %s@%s (%s): %w", r.Name, r.Version, root, err)
	}
	return r, nil
}

type fetched struct {
	from  peer.ID // "" for upstream
	group []cid.Cid
	err   error
}

// getBlocks fetches cids, blocks of the package root (whose root block is
// rootBlock), for this node. The parent names this node's peers for
// the package; each block has one owner among this node and them
// (swarm.Shares; swarm.Owner for a failed peer's): this node fetches its own share
// from upstream and the rest from the owners, which pull their share
// through. A peer that fails is dropped and a block a peer did not deliver
// is fetched from upstream (a peer whose requests fail at once, as when a
// dial races the peer's own, is asked again for a few seconds first).
// Blocks are taken in the package's order, the same at every node, in
// small groups, a few at a time per peer.
// arrived is told each group of blocks that arrived.
func (n *Node) getBlocks(ctx context.Context, root cid.Cid, rootBlock pkg.Root, cids []cid.Cid, arrived func([]cid.Cid)) error {
	all := rootBlock.CIDs()
	sizes := make([]uint64, len(rootBlock.Chunks))
	sizeOf := make(map[string]uint64, len(all))
	var total uint64
	for i, c := range rootBlock.Chunks {
		sizes[i] = uint64(c.Stored)
		sizeOf[all[i].KeyString()] = sizes[i]
		total += sizes[i]
	}
	n.want(cids, 1)
	defer n.want(cids, -1)
	defer n.setRoute(nil)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// In the package's order, the same at every node: the peers that ask an
	// owner for its share ask for the same blocks at about the same time,
	// so that each block the owner gets from upstream goes out to all of
	// them as it arrives.
	queue := slices.Clone(cids)
	upstreamOnly := map[string]bool{}
	upTries := map[string]int{} // times upstream lacked a block
	dropped := map[peer.ID]bool{}
	var peers []peer.ID
	var asked time.Time
	owner := map[string]peer.ID{}
	asking := map[cid.Cid]peer.ID{} // blocks asked of a peer, until its answer
	// queuedFrom is the peer a queued block is to be asked of ("" for
	// upstream); nextGroup takes the queue by it.
	queuedFrom := func(c cid.Cid) peer.ID {
		k := c.KeyString()
		if o := owner[k]; o != "" && !upstreamOnly[k] && !dropped[o] {
			return o
		}
		return ""
	}
	// toCome is, by peer of this node's now, the bytes this node still
	// waits for from it: asked for and not here yet, or still to ask for.
	toCome := func() map[peer.ID]uint64 {
		m := make(map[peer.ID]uint64, len(peers))
		for _, p := range peers {
			m[p] = 0
		}
		for c, p := range asking {
			if _, ok := m[p]; !ok {
				continue // a peer that was dropped or replaced
			}
			if ok, err := n.blocks.Has(ctx, c); err == nil && !ok {
				m[p] += sizeOf[c.KeyString()]
			}
		}
		for _, c := range queue {
			if o := queuedFrom(c); o != "" {
				if _, ok := m[o]; ok {
					m[o] += sizeOf[c.KeyString()]
				}
			}
		}
		return m
	}
	// What this node's peers wait for from each peer, as the parent last
	// said: each tells it what it waits for when it asks for its peers.
	var othersWait map[peer.ID]uint64
	refresh := func() {
		asked = time.Now()
		sw, err := n.swarm.Peers(ctx, root, toCome())
		if err != nil {
			n.log.Debug("ask parent for peers", "package", root, "err", err)
			return
		}
		othersWait = sw.OthersWait
		// A peer that ever sent this node a bad block is not asked again.
		bad := n.exchange.BadBlocks()
		got := slices.DeleteFunc(sw.Peers, func(p peer.ID) bool { return dropped[p] || bad[p] > 0 })
		slices.Sort(got)
		if slices.Equal(got, peers) && len(owner) > 0 {
			return
		}
		peers = got
		clear(owner)
		shares := swarm.Shares(all, sizes, n.host.ID(), peers)
		for _, c := range queue {
			if upstreamOnly[c.KeyString()] {
				owner[c.KeyString()] = "" // as nextGroup takes it, and children's requests follow
			} else {
				owner[c.KeyString()] = n.ownerOf(c, peers, shares)
			}
		}
		n.setRoute(owner)
	}
	refresh()
	r, _ := ctx.Value(routingKey{}).(*routing)
	n.routesKnown(r)

	// At the end, once this node's own share is in and its parent's link
	// is idle, it takes some of its peers' blocks from upstream rather
	// than wait for them behind the peers' uplinks: the last ones of the
	// peer whose uplink has the most left to send for the package (what
	// this node waits for from it, and what its other peers last told the
	// parent they do), block by block, each time of the one with the most
	// left then, so that what is left on each evens out (they would
	// otherwise finish one after the other). Once the one with the most
	// left has no block here not yet asked for, taking another's would not
	// make it end sooner: the rest of the budget is kept. A
	// peer's uplink, not its connection to this node: a receiver that
	// picked by what it waits for alone could pick a peer that is only
	// slow to it, while another uplink is the one that ends last. Bytes,
	// not blocks: chunks range from 128 to 512 KiB. At most endgameShare
	// of the package among all the peers and itself, so that the parent's
	// link carries about (1 + endgameShare) times the package in all.
	var spent uint64
	phase := 0 // of the endgame: 1 once own share is in, 2 near the end
	// upAsked are the blocks asked of upstream so far: the endgame keeps
	// what this node takes from upstream in all within its part of
	// (1 + endgameShare) times the package, so that a share that grew
	// (blocks a peer did not deliver at the start) leaves less to take.
	upAsked := map[string]bool{}
	var upBytes uint64
	// take moves peers' blocks to upstream until spent reaches fraction of
	// this node's budget, its part among its peers as they are now.
	take := func(fraction float64) {
		left, up := endgameQueue(queue, queuedFrom, upAsked, sizeOf)
		limit := endgameLimit(total, len(peers)+1, fraction, spent, upBytes+up)
		if limit <= spent {
			return
		}
		// The others' words are capped at the package's size: a peer's
		// uplink has no more of it than that for each of them to send.
		due := toCome()
		for _, p := range peers {
			due[p] += min(othersWait[p], total*uint64(len(peers)))
		}
		taken := endgamePick(peers, left, due, sizeOf, limit-spent)
		for _, k := range taken {
			spent += sizeOf[k]
			upstreamOnly[k] = true
			owner[k] = ""
		}
		if len(taken) > 0 {
			n.log.Debug("endgame: blocks of peers taken from upstream", "phase", phase, "blocks", len(taken), "bytes", spent)
			n.setRoute(owner)
		}
	}
	endgame := func(inflight map[peer.ID]int) {
		if len(peers) == 0 || inflight[""] > 0 || phase == 2 {
			return
		}
		for _, c := range queue {
			if upstreamOnly[c.KeyString()] || owner[c.KeyString()] == "" {
				return // own blocks still to fetch
			}
		}
		if phase == 0 {
			// Half now, evening out what is left from each peer.
			phase = 1
			take(0.5)
		}
		if len(queue) <= perPeer*groupSize*len(peers) {
			// The rest near the end, from the peers that are behind then.
			phase = 2
			take(1)
		}
	}

	// drop gives peer p up for the rest of this fetch: its queued blocks
	// go to the others, or to upstream, by rendezvous; those asked of it
	// come from upstream when their requests end. Children asking this
	// node for any of them are no longer sent to p.
	drop := func(p peer.ID) {
		dropped[p] = true
		peers = slices.DeleteFunc(peers, func(q peer.ID) bool { return q == p })
		for _, c := range queue {
			if owner[c.KeyString()] == p {
				owner[c.KeyString()] = n.ownerOf(c, peers, nil)
			}
		}
		for c, q := range asking {
			if q == p {
				owner[c.KeyString()] = ""
			}
		}
		n.setRoute(owner)
	}

	results := make(chan fetched, maxGroups)
	inflight := map[peer.ID]int{}
	failed := map[peer.ID]time.Time{}  // when a peer first failed a request
	holdOff := map[peer.ID]time.Time{} // a peer that failed is asked again after this
	running := 0
	for len(queue) > 0 || running > 0 {
		if len(queue) > 0 && time.Since(asked) > peersEvery {
			refresh()
		}
		endgame(inflight)
		for running < maxGroups {
			from, group := n.nextGroup(&queue, queuedFrom, inflight, holdOff)
			if group == nil {
				break
			}
			running++
			inflight[from]++
			for _, c := range group {
				if k := c.KeyString(); from != "" {
					asking[c] = from
				} else if !upAsked[k] {
					upAsked[k] = true
					upBytes += sizeOf[k]
				}
			}
			// Peers' blocks taken from upstream (the endgame, a peer that
			// failed or lacked them) are taken from it, not from the
			// peer it would point to.
			force := from == "" && slices.ContainsFunc(group, func(c cid.Cid) bool { return upstreamOnly[c.KeyString()] })
			go func() { results <- fetched{from: from, group: group, err: n.fetchGroup(ctx, from, group, force)} }()
		}
		var r fetched
		select {
		case r = <-results:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(peersEvery):
			continue
		}
		running--
		inflight[r.from]--
		for _, c := range r.group {
			delete(asking, c)
		}
		left, err := n.absent(ctx, r.group)
		if err != nil {
			return err
		}
		if len(left) < len(r.group) {
			arrived(slices.DeleteFunc(slices.Clone(r.group), func(c cid.Cid) bool {
				return slices.ContainsFunc(left, c.Equals)
			}))
		}
		retry := false // a peer asked again: its blocks stay its own
		if r.from == "" {
			if r.err == nil && len(left) == 0 {
				continue
			}
			// Upstream lacked some of them for now (its own fetch of
			// them failed, or they are on their way): asked again a few
			// times, then the fetch fails.
			for _, c := range left {
				if upTries[c.KeyString()]++; upTries[c.KeyString()] > upstreamRetries {
					if r.err != nil {
						return r.err
					}
					return fmt.Errorf("%d blocks not found upstream after %d tries", len(left), upstreamRetries+1)
				}
			}
			n.log.Debug("upstream lacked blocks: asking again", "blocks", len(left), "err", r.err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(upstreamRetryWait):
			}
		} else if r.err != nil && dropped[r.from] {
			// Dropped while this request was out: its blocks come from
			// upstream, as below.
		} else if r.err != nil && n.retryPeer(r.from, r.err, failed) {
			// A request that failed at once (a dial that failed while two
			// peers dialled each other both ways) is asked again shortly:
			// a peer dropped for it would have its share fetched from
			// upstream for the rest of the fetch.
			n.log.Info("peer failed to serve blocks; asking it again shortly", "peer", r.from, "err", r.err)
			holdOff[r.from] = time.Now().Add(peerHoldOff)
			retry = true
		} else if r.err != nil {
			n.log.Warn("peer failed to serve blocks; fetching its share elsewhere", "peer", r.from, "err", r.err)
			drop(r.from)
		} else if len(left) > 0 {
			// Said, as it costs the parent's link what the peer would
			// have carried.
			var bytes uint64
			for _, c := range left {
				bytes += sizeOf[c.KeyString()]
			}
			n.log.Debug("peer lacked blocks it was asked for: fetching them from upstream", "peer", r.from, "blocks", len(left), "bytes", bytes)
		}
		for _, c := range left {
			if !retry {
				upstreamOnly[c.KeyString()] = true
			}
			queue = append(queue, c)
		}
	}
	return nil
}

// endgameQueue sorts the queue for the endgame (from gives a queued
// block's source, "" for upstream): left are, by peer, the keys of the
// blocks to come from it, in the queue's order; up are the bytes of those
// to come from upstream and not asked of it yet (a block asked before and
// queued again, as upstream lacked it, is already in what was asked).
func endgameQueue(queue []cid.Cid, from func(cid.Cid) peer.ID, upAsked map[string]bool, sizeOf map[string]uint64) (left map[peer.ID][]string, up uint64) {
	left = map[peer.ID][]string{}
	for _, c := range queue {
		k := c.KeyString()
		if o := from(c); o != "" {
			left[o] = append(left[o], k)
		} else if !upAsked[k] {
			up += sizeOf[k]
		}
	}
	return left, up
}

// endgamePick chooses, within room bytes, the queued blocks of peers to
// take from upstream instead: each time the last one queued of the peer
// whose uplink has the most left to send (due, bytes by peer), so that
// what is left on each evens out. It stops once that peer has no block
// queued (taking another's would not make it end sooner) or its next one
// does not fit. left and due are not changed.
func endgamePick(peers []peer.ID, left map[peer.ID][]string, due map[peer.ID]uint64, sizeOf map[string]uint64, room uint64) []string {
	due = maps.Clone(due)
	queued := map[peer.ID]int{}
	for p, l := range left {
		queued[p] = len(l)
	}
	var taken []string
	var bytes uint64
	for {
		var slow peer.ID
		for _, p := range peers {
			if slow == "" || due[p] > due[slow] {
				slow = p
			}
		}
		if queued[slow] == 0 {
			return taken
		}
		k := left[slow][queued[slow]-1]
		if bytes+sizeOf[k] > room {
			return taken
		}
		bytes += sizeOf[k]
		taken = append(taken, k)
		queued[slow]--
		due[slow] -= min(due[slow], sizeOf[k])
	}
}

// endgameLimit is what the endgame of a node may have spent (bytes of
// its peers' blocks taken from upstream instead) once it takes fraction
// of its budget: its part, among members (itself and its peers), of
// endgameShare of the package of total bytes, and no more than keeps up,
// the bytes it asked or will ask of upstream in all so far (spent
// included), within its part of (1 + endgameShare) times the package.
func endgameLimit(total uint64, members int, fraction float64, spent, up uint64) uint64 {
	limit := uint64(float64(total) * endgameShare * fraction / float64(members))
	upCap := uint64(float64(total) * (1 + endgameShare) / float64(members))
	if up >= upCap {
		return min(limit, spent)
	}
	return min(limit, spent+upCap-up)
}

// retryPeer says whether a peer whose request failed with err is asked
// again rather than dropped: not if it sent a bad block, stalled, got
// stuck or is passed over (passOver), and not once it has been failing for
// peerRetryFor.
func (n *Node) retryPeer(p peer.ID, err error, failed map[peer.ID]time.Time) bool {
	if errors.Is(err, exchange.ErrBadBlock) || errors.Is(err, exchange.ErrStuck) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) || n.exchange.BadBlocks()[p] > 0 || n.passOver(p) {
		return false
	}
	if _, ok := failed[p]; !ok {
		failed[p] = time.Now()
	}
	return time.Since(failed[p]) < peerRetryFor
}

// ownerOf is who this node asks for c, "" for upstream: its owner in
// shares, or, for a block shares do not place (a failed peer's, with
// shares nil), by rendezvous among this node and peers.
func (n *Node) ownerOf(c cid.Cid, peers []peer.ID, shares map[string]peer.ID) peer.ID {
	o, ok := shares[c.KeyString()]
	if !ok {
		o = swarm.Owner(c, n.host.ID(), peers)
	}
	if o == n.host.ID() {
		return ""
	}
	return o
}

// nextGroup takes from the queue the next group of blocks to ask one
// source for (source(c) is block c's, "" for upstream): the source with
// the fewest requests in flight that has blocks to give and room for
// another request.
func (n *Node) nextGroup(queue *[]cid.Cid, source func(cid.Cid) peer.ID, inflight map[peer.ID]int, holdOff map[peer.ID]time.Time) (peer.ID, []cid.Cid) {
	best, found := peer.ID(""), false
	for _, c := range *queue {
		s := source(c)
		if inflight[s] >= perPeer || time.Now().Before(holdOff[s]) {
			continue
		}
		if !found || inflight[s] < inflight[best] {
			best, found = s, true
		}
	}
	if !found {
		return "", nil
	}
	var group []cid.Cid
	rest := (*queue)[:0]
	for _, c := range *queue {
		if len(group) < groupSize && source(c) == best {
			group = append(group, c)
		} else {
			rest = append(rest, c)
		}
	}
	*queue = rest
	return best, group
}

// fetchGroup fetches group from upstream (from == "", force as for
// pullThrough) or from a peer.
func (n *Node) fetchGroup(ctx context.Context, from peer.ID, group []cid.Cid, force bool) error {
	if from == "" {
		return n.pullThrough(ctx, group, pull{forChild: true, own: true, force: force})
	}
	mine, theirs := n.claimBlocks(group, false, true)
	defer n.releaseBlocks(mine)
	need, err := n.absent(ctx, mine)
	if err != nil {
		return err
	}
	if len(need) > 0 {
		n.meet(ctx, from)
		if _, err := n.exchange.Fetch(ctx, from, need); err != nil {
			return err
		}
	}
	return waitAll(ctx, theirs)
}

// meet makes sure this node and peer p, which fetch from each other, are
// connected without both dialing at once: two dials that cross can meet in
// one simultaneous-open TCP connection (both sides dial from their listen
// port) where both start Noise as the initiator and fail. The peer with
// the lower ID dials; the other waits a little for it, then dials anyway.
func (n *Node) meet(ctx context.Context, p peer.ID) {
	if _, ok := n.member.Peer(p); ok || n.host.ID() < p {
		return // connected, or this node dials (NewStream does)
	}
	n.waitVerified(ctx, p, meetWait)
}

// waitVerified waits, at most d, until p is connected and verified.
func (n *Node) waitVerified(ctx context.Context, p peer.ID, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if _, ok := n.member.Peer(p); ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// setRoute records which peer this node fetches each block from while it
// fetches a package (serveUpstream follows it); nil forgets it.
func (n *Node) setRoute(owner map[string]peer.ID) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	if owner == nil {
		n.route = map[string]peer.ID{}
		return
	}
	for k, o := range owner {
		if o == "" {
			delete(n.route, k)
		} else {
			n.route[k] = o
		}
	}
}

// want counts the blocks this node is fetching for itself (a client serves
// its peers only those).
func (n *Node) want(cids []cid.Cid, delta int) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	for _, c := range cids {
		k := c.KeyString()
		if n.wanted[k] += delta; n.wanted[k] <= 0 {
			delete(n.wanted, k)
		}
	}
}

// prefetch fetches, in the background, the package a manifest names, so
// that it is here before this relay's children ask for it.
func (n *Node) prefetch(ctx context.Context, v gossip.Verified) {
	root, err := cid.Decode(v.Package.CID)
	if err != nil {
		n.log.Warn("manifest names a bad package", "job", v.JobID, "err", err)
		return
	}
	ctx, r := n.expectRoutes(ctx) // before its children ask for blocks
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.routesKnown(r)
		ctx, cancel := context.WithDeadline(ctx, v.ExpiresAt)
		defer cancel()
		if err := n.store.AddPin(ctx, store.Pin{CID: root.String(), Job: v.JobID, Until: v.ExpiresAt}); err != nil {
			n.log.Warn("pin prefetched package", "job", v.JobID, "package", root, "err", err)
			return
		}
		start := time.Now()
		r, err := n.fetchPackage(ctx, root, nil)
		if err != nil {
			n.log.Warn("prefetch package", "job", v.JobID, "package", root, "err", err)
			return
		}
		n.log.Info("package prefetched", "job", v.JobID, "package", r.Name+" "+r.Version, "took", time.Since(start).Round(time.Millisecond))
		if err := n.store.AddPackage(ctx, store.Package{CID: root.String(), Name: r.Name, Version: r.Version, Size: r.Size,
			Stored: r.Stored, Chunks: len(r.Chunks), AddedAt: time.Now()}); err != nil {
			n.log.Warn("record prefetched package", "package", root, "err", err)
		}
		n.afterFetch(ctx)
	}()
}

// BadBlocks counts the blocks each peer sent this node that did not match
// their CID (each was dropped and fetched elsewhere).
func (n *Node) BadBlocks() map[peer.ID]int { return n.exchange.BadBlocks() }

// BlocksServed counts the blocks this node sent, by peer.
func (n *Node) BlocksServed() map[peer.ID]int { return n.exchange.Served() }

// ReportsReceived counts the report batches and reports this node's
// children sent it.
func (n *Node) ReportsReceived() (batches, reports int) { return n.reports.Received() }
