package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/internal/wire"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/job"
	"github.com/swdist/swdist/node/store"
)

// A collect job gathers files from its destinations. Each builds the files
// its paths match into an archive in its own block store (a package, so
// content-addressed, chunked, compressed and checked like any), records it
// and reports its root up the tree with the collect.result report; every
// node on the way records the child it came through. The managing node of
// the job (its administrator's scope) then fetches the blocks down that
// path: it asks its child to bring the collection to itself
// (/swdist/collect/1.0.0), which asks its own child, and so on to the
// destination, and each fetches the blocks from the child over the blocks
// protocol, checked on arrival. 'swdist job files' does the same for what
// is not held yet, on any managing node above the destination.

// Parameters of a collect job.
const (
	ParamPaths   = "paths"    // a JSON array of absolute paths and glob patterns
	ParamMaxSize = "max_size" // bytes one destination may collect, e.g. 64M
)

// Bounds of a collection.
const (
	DefaultCollectMax = 64 << 20 // bytes from one destination
	maxCollectFiles   = 10_000
	maxCollectPaths   = 64
	maxSkipped        = 50 // reasons reported
	collectStreamTime = 15 * time.Minute
	collectFetches    = 4 // collections a managing node fetches at once by itself
)

const collectProtocol protocol.ID = "/swdist/collect/1.0.0"

// CollectPaths checks the paths of a collect job: absolute, at most 64,
// each a valid glob pattern (filepath.Match: *, ?, [...]).
func CollectPaths(paths []string) error {
	if len(paths) == 0 {
		return errors.New("a collect job needs at least one path")
	}
	if len(paths) > maxCollectPaths {
		return fmt.Errorf("%d paths: at most %d", len(paths), maxCollectPaths)
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, "\x00\n") {
			return fmt.Errorf("path %q: it must be absolute (as on the destinations), on one line", p)
		}
		if filepath.Clean(p) == "/" {
			return fmt.Errorf("path %q: the whole file system cannot be collected", p)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
	}
	return nil
}

// collectParams reads a collect job's paths and size bound.
func collectParams(m gossip.Manifest) ([]string, int64, error) {
	var paths []string
	if err := json.Unmarshal([]byte(m.Params[ParamPaths]), &paths); err != nil {
		return nil, 0, fmt.Errorf("collect job: paths %q: %w", m.Params[ParamPaths], err)
	}
	if err := CollectPaths(paths); err != nil {
		return nil, 0, err
	}
	limit := int64(DefaultCollectMax)
	if s := m.Params[ParamMaxSize]; s != "" {
		v, ok := inventory.ParseNumber(s)
		if !ok || v <= 0 {
			return nil, 0, fmt.Errorf("collect job: max_size %q is not a size", s)
		}
		limit = int64(v)
	}
	return paths, limit, nil
}

// collectPlan is what a destination's paths match.
type collectPlan struct {
	files     []pkg.File
	total     int64
	skipped   []string // "path: why"
	unmatched []string // patterns that match nothing
	tooMany   bool     // more than maxCollectFiles
}

func (p *collectPlan) skip(path string, why any) {
	p.skipped = append(p.skipped, fmt.Sprintf("%s: %v", path, why))
}

// planCollect lists the regular files that patterns match, walking the
// directories they match (symlinks to files are followed, to directories
// inside a walk not), and what cannot be collected, with why: files it
// cannot open, special files.
func planCollect(ctx context.Context, patterns []string) collectPlan {
	var p collectPlan
	seen := map[string]bool{}
	add := func(path, name string, info fs.FileInfo) {
		if seen[name] || p.tooMany {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			p.skip(path, why(err))
			return
		}
		f.Close()
		if len(p.files) == maxCollectFiles {
			p.tooMany = true
			return
		}
		seen[name] = true
		p.files = append(p.files, pkg.File{Path: path, Name: name, Size: info.Size(), Mode: info.Mode().Perm() | 0o600})
		p.total += info.Size()
	}
	for _, pat := range patterns {
		matches, _ := filepath.Glob(pat) // checked: only a bad pattern errs
		if len(matches) == 0 {
			p.unmatched = append(p.unmatched, pat)
			continue
		}
		for _, m := range matches {
			if ctx.Err() != nil || p.tooMany {
				return p
			}
			name := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(m)), "/")
			info, err := os.Stat(m)
			switch {
			case err != nil:
				p.skip(m, why(err))
			case info.Mode().IsRegular():
				add(m, name, info)
			case info.IsDir():
				p.walk(ctx, m, name, add)
			default:
				p.skip(m, "a "+kindOf(info.Mode())+": not collected")
			}
		}
	}
	return p
}

// walk adds the files under the directory dir, named under name.
func (p *collectPlan) walk(ctx context.Context, dir, name string, add func(path, name string, info fs.FileInfo)) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		p.skip(dir, err)
		return
	}
	_ = filepath.WalkDir(real, func(path string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil || p.tooMany {
			return filepath.SkipAll
		}
		shown := filepath.Join(dir, strings.TrimPrefix(path, real))
		if err != nil {
			p.skip(shown, why(err))
			return nil // WalkDir skips what it could not read
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Stat(path)
		rel, _ := filepath.Rel(real, path)
		switch {
		case err != nil:
			p.skip(shown, why(err))
		case info.Mode().IsRegular():
			add(path, name+"/"+filepath.ToSlash(rel), info)
		case info.IsDir():
			p.skip(shown, "a symlink to a directory: not followed")
		default:
			p.skip(shown, "a "+kindOf(info.Mode())+": not collected")
		}
		return nil
	})
}

// why is what went wrong with a path, without the path.
func why(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// collectJob runs a "collect" job: the files the job's paths match are
// built into an archive in this node's block store, recorded, and their
// root reported up the tree for the managing node to fetch. Nothing
// matching is "skipped"; files matched but none readable, or more than
// max_size, "failed", with why; otherwise "succeeded", naming what it
// could not collect.
func (n *Node) collectJob(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (string, error) {
	paths, limit, err := collectParams(m)
	if err != nil {
		return "", err
	}
	step(job.Running, "")
	plan := planCollect(ctx, paths)
	if err := ctx.Err(); err != nil {
		return "", err
	}
	for _, u := range plan.unmatched {
		plan.skip(u, "nothing matches")
	}
	switch {
	case plan.tooMany:
		return "", fmt.Errorf("the paths match more than %d files: narrow them", maxCollectFiles)
	case len(plan.files) == 0 && len(plan.skipped) == len(plan.unmatched):
		return "", &job.Ended{Status: job.Status{State: job.Skipped, Reason: "nothing matches " + strings.Join(paths, " ")}}
	case len(plan.files) == 0:
		return "", fmt.Errorf("nothing could be collected: %s", firstReasons(plan.skipped, 5))
	case plan.total > limit:
		big := slices.Clone(plan.files)
		slices.SortFunc(big, func(a, b pkg.File) int { return int(b.Size - a.Size) })
		var largest []string
		for _, f := range big[:min(3, len(big))] {
			largest = append(largest, fmt.Sprintf("%s (%s)", f.Path, humanize.IBytes(uint64(f.Size))))
		}
		return "", fmt.Errorf("the paths match %s in %d files, more than the job's limit of %s (max_size): nothing was collected; narrow the paths or raise --max-size; largest: %s",
			humanize.IBytes(uint64(plan.total)), len(plan.files), humanize.IBytes(uint64(limit)), strings.Join(largest, ", "))
	}
	res, err := pkg.BuildFiles(ctx, plan.files, "collect", m.JobID, n.blocks, pkg.BuildOptions{})
	if err != nil {
		return "", fmt.Errorf("archive the files: %w", err)
	}
	skipped := plan.skipped
	if len(skipped) > maxSkipped {
		skipped = append(skipped[:maxSkipped:maxSkipped], fmt.Sprintf("... and %d more", len(plan.skipped)-maxSkipped))
	}
	self := n.host.ID().String()
	now := time.Now()
	if err := n.store.RecordCollection(ctx, store.Collection{Job: m.JobID, Peer: self, Root: res.Root.String(), Files: len(plan.files),
		Bytes: plan.total, Skipped: skipped, Via: self, ReportedAt: now, HeldAt: now}); err != nil {
		return "", err
	}
	body, err := cert.Marshal(store.Collected{Job: m.JobID, Root: res.Root.String(), Files: len(plan.files), Bytes: plan.total, Skipped: skipped})
	if err != nil {
		return "", err
	}
	r := report.Report{ID: m.JobID + "/" + self + "/" + store.KindCollect, Origin: n.host.ID(), Kind: store.KindCollect,
		At: now.UnixMilli(), Body: body}
	if err := n.store.Apply(ctx, n.host.ID(), []report.Report{r}, n.parent != ""); err != nil {
		return "", err
	}
	n.reports.Wake()
	out := fmt.Sprintf("collected %d files (%s) as %s", len(plan.files), humanize.IBytes(uint64(plan.total)), res.Root)
	if len(plan.skipped) > 0 {
		out += "; not collected: " + firstReasons(plan.skipped, 10)
	}
	return out, nil
}

func firstReasons(reasons []string, k int) string {
	s := strings.Join(reasons[:min(k, len(reasons))], "; ")
	if len(reasons) > k {
		s += fmt.Sprintf("; and %d more", len(reasons)-k)
	}
	return s
}

// collectState is a node's fetches of collections in progress.
type collectState struct {
	ctx      context.Context // the node's
	mu       sync.Mutex
	inflight map[string]chan struct{} // by job/peer
	sem      chan struct{}            // fetches started on their own
}

// startCollect serves the collect protocol: the parent asks this node to
// bring a collection of its subtree here.
func (n *Node) startCollect(ctx context.Context) {
	n.coll = collectState{ctx: ctx, inflight: map[string]chan struct{}{}, sem: make(chan struct{}, collectFetches)}
	n.host.SetStreamHandler(collectProtocol, n.member.Guard(func(pr member.Peer, s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(collectStreamTime))
		var req bringReq
		if err := wire.Read(s, 4<<10, &req); err != nil {
			_ = s.Reset()
			return
		}
		var resp wire.Response[bool]
		if pr.ID != n.parent {
			resp.Error = fmt.Sprintf("%s asks %s for a collection, but only its parent may", pr.ID, n.host.ID())
		} else if err := n.bringCollection(ctx, req.Job, req.Origin); err != nil {
			resp.Error = err.Error()
		} else {
			ok := true
			resp.OK = &ok
		}
		_ = wire.Write(s, resp)
	}))
}

type bringReq struct {
	Job    string `cbor:"0,keyasint"`
	Origin string `cbor:"1,keyasint"`
}

// takeCollections records the collect results among reports that came
// through the child from, dropping malformed ones, and, where this node
// manages their job, starts fetching them.
func (n *Node) takeCollections(ctx context.Context, from peer.ID, reports []report.Report) ([]report.Report, error) {
	out := reports[:0:0]
	for _, r := range reports {
		if r.Kind != store.KindCollect {
			out = append(out, r)
			continue
		}
		var c store.Collected
		if err := cert.Unmarshal(r.Body, &c); err != nil || checkCollected(c) != nil {
			if err == nil {
				err = checkCollected(c)
			}
			n.log.Warn("collect report refused", "from", from, "origin", r.Origin, "err", err)
			continue
		}
		if err := n.store.RecordCollection(ctx, store.Collection{Job: c.Job, Peer: r.Origin.String(), Root: c.Root, Files: c.Files,
			Bytes: c.Bytes, Skipped: c.Skipped, Via: from.String(), ReportedAt: time.UnixMilli(r.At)}); err != nil {
			return nil, err
		}
		out = append(out, r)
		if n.manages(ctx, c.Job) {
			n.fetchSoon(c.Job, r.Origin.String())
		}
	}
	return out, nil
}

func checkCollected(c store.Collected) error {
	root, err := cid.Decode(c.Root)
	if err != nil || root.Prefix().Codec != blocks.DagCBOR {
		return fmt.Errorf("root %q is not a package root", c.Root)
	}
	if c.Job == "" || len(c.Job) > 64 || c.Files < 1 || c.Files > maxCollectFiles || c.Bytes < 0 || len(c.Skipped) > maxSkipped+1 {
		return fmt.Errorf("job %.64q, %d files, %d bytes, %d skipped: out of bounds", c.Job, c.Files, c.Bytes, len(c.Skipped))
	}
	for _, s := range c.Skipped {
		if len(s) > 8<<10 {
			return errors.New("a skipped path's reason over 8 KiB")
		}
	}
	return nil
}

// manages reports whether this node is the managing node of job: its
// administrator's scope.
func (n *Node) manages(ctx context.Context, id string) bool {
	_, a, err := n.heldManifest(ctx, id)
	return err == nil && a.Scope == n.host.ID()
}

// fetchSoon fetches a collection in the background, a few at a time; a
// failure is recorded for 'job files', which tries again.
func (n *Node) fetchSoon(id, origin string) {
	if n.coll.ctx.Err() != nil {
		return // the node is stopping
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case n.coll.sem <- struct{}{}:
		case <-n.coll.ctx.Done():
			return
		}
		defer func() { <-n.coll.sem }()
		ctx, cancel := context.WithTimeout(n.coll.ctx, collectStreamTime)
		defer cancel()
		if err := n.bringCollection(ctx, id, origin); err != nil && n.coll.ctx.Err() == nil {
			n.log.Warn("fetch collected files", "job", id, "peer", origin, "err", err)
		}
	}()
}

// bringCollection makes every block of what origin collected for job held
// here, fetched down the tree through the child its report came through.
// One fetch of a collection runs at a time; its outcome is recorded.
func (n *Node) bringCollection(ctx context.Context, id, origin string) error {
	key := id + "/" + origin
	for {
		n.coll.mu.Lock()
		ch, busy := n.coll.inflight[key]
		if !busy {
			n.coll.inflight[key] = make(chan struct{})
			n.coll.mu.Unlock()
			break
		}
		n.coll.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() {
		n.coll.mu.Lock()
		close(n.coll.inflight[key])
		delete(n.coll.inflight, key)
		n.coll.mu.Unlock()
	}()
	c, ok, err := n.store.FindCollection(ctx, id, origin)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s knows of no files collected by %s for job %s", n.host.ID(), origin, id)
	}
	if !c.HeldAt.IsZero() {
		if n.holdsCollection(ctx, c) {
			return nil
		}
	}
	err = n.fetchCollection(ctx, c)
	if ctx.Err() == nil || err == nil {
		if rerr := n.store.CollectionFetched(context.WithoutCancel(ctx), id, origin, time.Now(), err); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// holdsCollection reports whether every block of c is here.
func (n *Node) holdsCollection(ctx context.Context, c store.Collection) bool {
	root, err := cid.Decode(c.Root)
	if err != nil {
		return false
	}
	r, err := pkg.ReadRoot(ctx, n.blocks, root)
	if err != nil {
		return false
	}
	missing, err := pkg.Missing(ctx, n.blocks, r)
	return err == nil && len(missing) == 0
}

func (n *Node) fetchCollection(ctx context.Context, c store.Collection) error {
	if n.holdsCollection(ctx, c) {
		return nil
	}
	self := n.host.ID()
	if c.Peer == self.String() {
		return fmt.Errorf("%s no longer holds the files it collected for job %s", self, c.Job)
	}
	root, err := cid.Decode(c.Root)
	if err != nil {
		return err
	}
	via, err := peer.Decode(c.Via)
	if err != nil {
		return fmt.Errorf("collection of %s: via %q: %w", c.Peer, c.Via, err)
	}
	if _, ok := n.member.Peer(via); !ok {
		if via.String() == c.Peer {
			return fmt.Errorf("%s, which collected the files, is not connected to %s", via, self)
		}
		return fmt.Errorf("%s, the way down to %s, is not connected to %s", via, c.Peer, self)
	}
	if err := n.askBring(ctx, via, c.Job, c.Peer); err != nil {
		return err
	}
	if ok, _ := n.blocks.Has(ctx, root); !ok {
		if _, err := n.exchange.Fetch(ctx, via, []cid.Cid{root}); err != nil {
			return fmt.Errorf("fetch the collection's root from %s: %w", via, err)
		}
	}
	r, err := pkg.ReadRoot(ctx, n.blocks, root)
	if errors.Is(err, blocks.ErrNotFound) {
		return fmt.Errorf("%s did not send the root of the files %s collected", via, c.Peer)
	}
	if err != nil {
		return fmt.Errorf("the files %s collected: %w", c.Peer, err)
	}
	if limit := n.collectLimit(ctx, c.Job); r.Size > uint64(limit)+uint64(c.Files+1)*(16<<10) {
		return fmt.Errorf("the files %s collected are %d bytes, more than job %s allows (%d): not fetched", c.Peer, r.Size, c.Job, limit)
	}
	missing, err := pkg.Missing(ctx, n.blocks, r)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		left, err := n.exchange.Fetch(ctx, via, missing)
		if err != nil {
			return fmt.Errorf("fetch the files %s collected from %s: %w", c.Peer, via, err)
		}
		if len(left) > 0 {
			return fmt.Errorf("%s did not send %d of the %d blocks of the files %s collected", via, len(left), len(missing), c.Peer)
		}
	}
	return nil
}

// askBring asks the child via to bring origin's collection for job to
// itself.
func (n *Node) askBring(ctx context.Context, via peer.ID, id, origin string) error {
	s, err := n.host.NewStream(ctx, via, collectProtocol)
	if err != nil {
		return fmt.Errorf("ask %s for the files %s collected: %w", via, origin, err)
	}
	defer s.Close()
	dl := time.Now().Add(collectStreamTime)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = s.SetDeadline(dl)
	if err := wire.Write(s, bringReq{Job: id, Origin: origin}); err != nil {
		_ = s.Reset()
		return fmt.Errorf("ask %s for the files %s collected: %w", via, origin, err)
	}
	var resp wire.Response[bool]
	if err := wire.Read(s, 64<<10, &resp); err != nil {
		_ = s.Reset()
		return fmt.Errorf("ask %s for the files %s collected: %w", via, origin, err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	return nil
}

// collectLimit is a held collect job's max_size (the default if unknown).
func (n *Node) collectLimit(ctx context.Context, id string) int64 {
	m, _, err := n.heldManifest(ctx, id)
	if err != nil {
		return DefaultCollectMax
	}
	_, limit, err := collectParams(m)
	if err != nil {
		return DefaultCollectMax
	}
	return limit
}

// States of a destination in 'job files' besides its job states.
const (
	FilesCollected  = "collected"   // every block held here, checked
	FilesNotFetched = "not fetched" // reported, not fetched here yet
	FilesFailed     = "fetch failed"
)

// JobFiles implements api.Backend: what each destination of a collect job
// gathered, as known here; with fetch, what is not held here yet is
// fetched through the tree first.
func (n *Node) JobFiles(ctx context.Context, id string, fetch bool) (api.JobFiles, error) {
	if n.issuer == nil {
		return api.JobFiles{}, api.BadRequest("this node is a client: collected files are kept on the managing nodes above it")
	}
	m, _, err := n.heldManifest(ctx, id)
	if err != nil {
		return api.JobFiles{}, err
	}
	if m.Type != "collect" {
		return api.JobFiles{}, api.BadRequest("job %s is a %s job: only collect jobs gather files", id, m.Type)
	}
	cols, err := n.store.Collections(ctx, id)
	if err != nil {
		return api.JobFiles{}, err
	}
	if fetch {
		var wg sync.WaitGroup
		sem := make(chan struct{}, collectFetches)
		for _, c := range cols {
			if !c.HeldAt.IsZero() && n.holdsCollection(ctx, c) {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				_ = n.bringCollection(ctx, id, c.Peer) // recorded
			}()
		}
		wg.Wait()
		if cols, err = n.store.Collections(ctx, id); err != nil {
			return api.JobFiles{}, err
		}
	}
	st, err := n.JobStatus(ctx, id, true)
	if err != nil {
		return api.JobFiles{}, err
	}
	reasons := map[string]string{}
	for _, f := range append(st.Failed, st.Skipped...) {
		reasons[f.PeerID] = f.Reason
	}
	byPeer := map[string]*api.CollectedPeer{}
	for p, state := range st.Destinations {
		byPeer[p] = &api.CollectedPeer{PeerID: p, State: state, Error: reasons[p]}
	}
	for _, c := range cols {
		e := &api.CollectedPeer{PeerID: c.Peer, CID: c.Root, Files: c.Files, Bytes: c.Bytes, Skipped: c.Skipped, State: FilesNotFetched}
		switch {
		case !c.HeldAt.IsZero() && n.holdsCollection(ctx, c):
			e.State = FilesCollected
		case c.FetchError != "":
			e.State, e.Error = FilesFailed, c.FetchError
		}
		byPeer[c.Peer] = e
	}
	peers := slices.Sorted(func(yield func(string) bool) {
		for p := range byPeer {
			if !yield(p) {
				return
			}
		}
	})
	hosts, err := n.store.Hostnames(ctx, peers)
	if err != nil {
		return api.JobFiles{}, err
	}
	taken := map[string]int{}
	for _, h := range hosts {
		taken[h]++
	}
	out := api.JobFiles{ID: id, Peers: []api.CollectedPeer{}}
	for _, p := range peers {
		e := byPeer[p]
		e.Hostname, e.Dir = hosts[p], p
		if h := hosts[p]; taken[h] == 1 && safeName.MatchString(h) && byPeer[h] == nil {
			e.Dir = h
		}
		out.Peers = append(out.Peers, *e)
	}
	slices.SortFunc(out.Peers, func(a, b api.CollectedPeer) int { return strings.Compare(a.Dir, b.Dir) })
	return out, nil
}

// WriteJobFiles unpacks each collection of files that is held (state
// "collected") from the block store in blocksDir into out/DIR, DIR being
// the entry's Dir, checking every block and path (pkg.Unpack). out must
// not exist, or be empty. It returns the directories written.
func WriteJobFiles(ctx context.Context, blocksDir string, files api.JobFiles, out string) ([]string, error) {
	if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s exists and is not empty: choose a new directory", out)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	bs, err := blocks.Open(blocksDir)
	if err != nil {
		return nil, err
	}
	defer bs.Close()
	var written []string
	for _, e := range files.Peers {
		if e.State != FilesCollected {
			continue
		}
		root, err := cid.Decode(e.CID)
		if err != nil {
			return written, fmt.Errorf("%s: %w", e.PeerID, err)
		}
		if e.Dir == "" || e.Dir != filepath.Base(e.Dir) || e.Dir == "." || e.Dir == ".." {
			return written, fmt.Errorf("%s: directory name %q", e.PeerID, e.Dir)
		}
		dir := filepath.Join(out, e.Dir)
		if err := pkg.Unpack(ctx, bs, root, dir); err != nil {
			return written, fmt.Errorf("the files of %s: %w", e.PeerID, err)
		}
		written = append(written, dir)
	}
	return written, nil
}
