package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/job"
	"github.com/swdist/swdist/node/store"
)

// reportStatus records one of this node's own job transitions: applied to
// its own database and, below the root, queued for the parent.
func (n *Node) reportStatus(ctx context.Context, s job.Status) error {
	body, err := cert.Marshal(store.JobState{Job: s.Job, State: s.State, Reason: s.Reason, Exit: s.Exit, Output: s.Output,
		Held: s.Held, Total: s.Total})
	if err != nil {
		return err
	}
	self := n.host.ID()
	id := s.Job + "/" + self.String() + "/" + s.State
	if s.Total > 0 {
		id += "/" + strconv.FormatInt(s.Held, 10) // each step of a fetch is its own report
	}
	r := report.Report{ID: id, Origin: self, Kind: store.KindJobStatus, At: time.Now().UnixMilli(), Body: body}
	if err := n.store.Apply(ctx, self, []report.Report{r}, n.parent != ""); err != nil {
		return err
	}
	n.reports.Wake()
	return nil
}

// applyReports takes a child's batch: stored, and queued for the parent.
func (n *Node) applyReports(ctx context.Context, from peer.ID, reports []report.Report) error {
	reports = n.checkReports(from, reports)
	reports, err := n.takeCollections(ctx, from, reports)
	if err != nil {
		return err
	}
	if err := n.store.Apply(ctx, from, reports, n.parent != ""); err != nil {
		return err
	}
	n.reports.Wake()
	return nil
}

// fromSubtree: a child reports for itself; a child relay for its subtree.
func (n *Node) fromSubtree(from, origin peer.ID) bool {
	if from == origin {
		return true
	}
	pr, ok := n.member.Peer(from)
	return ok && pr.Cert.Role == cert.RoleRelay
}

// JobStatus implements api.Backend: where each destination of a job stands,
// as reported up to this node, against the destinations this node expects
// from its view of its subtree.
func (n *Node) JobStatus(ctx context.Context, id string, destinations bool) (api.JobStatus, error) {
	m, a, err := n.heldManifest(ctx, id)
	if err != nil {
		return api.JobStatus{}, err
	}
	states, err := n.store.JobStates(ctx, id)
	if err != nil {
		return api.JobStatus{}, err
	}
	byPeer := map[string]store.DestState{}
	for _, d := range states {
		byPeer[d.Peer] = d
	}
	st := api.JobStatus{ID: id, Counts: map[string]int{}, Failed: []api.FailedDest{}, Skipped: []api.FailedDest{}, Subtrees: []api.SubtreeStatus{}}
	if destinations {
		st.Destinations = map[string]string{}
	}
	subtrees := map[string]*api.SubtreeStatus{}
	self := n.host.ID().String()
	seen := map[string]bool{}
	count := func(peerID, sub string) {
		seen[peerID] = true
		st.Expected++
		state := "not reported"
		d, ok := byPeer[peerID]
		fetching := ok && d.State == job.Fetching && d.Total > 0
		if fetching {
			if st.Fetching == nil {
				st.Fetching = &api.FetchBytes{}
			}
			st.Fetching.Add(d.Held, d.Total)
			if destinations {
				if st.Progress == nil {
					st.Progress = map[string]api.FetchBytes{}
				}
				st.Progress[peerID] = api.FetchBytes{Destinations: 1, Held: d.Held, Total: d.Total}
			}
		}
		if ok {
			state = d.State
			switch d.State {
			case job.Failed:
				st.Failed = append(st.Failed, api.FailedDest{PeerID: d.Peer, Reason: d.Reason, Exit: d.Exit, Output: d.Output})
			case job.Skipped:
				st.Skipped = append(st.Skipped, api.FailedDest{PeerID: d.Peer, Reason: d.Reason})
			}
		}
		st.Counts[state]++
		if destinations {
			st.Destinations[peerID] = state
		}
		if sub != "" {
			ss := subtrees[sub]
			if ss == nil {
				ss = &api.SubtreeStatus{PeerID: sub, Counts: map[string]int{}}
				subtrees[sub] = ss
			}
			ss.Expected++
			ss.Counts[state]++
			if fetching {
				if ss.Fetching == nil {
					ss.Fetching = &api.FetchBytes{}
				}
				ss.Fetching.Add(d.Held, d.Total)
			}
		}
	}

	var walk func(t tree.Node, lineage []string, sub string)
	walk = func(t tree.Node, lineage []string, sub string) {
		lineage = append([]string{t.PeerID}, lineage...)
		// The admin's scope bounds the destinations: it must be this node
		// or one of its ancestors.
		if destination(m.Target, a.Scope.String(), t.Role, t.Site, t.Groups, lineage) {
			count(t.PeerID, sub)
		}
		for _, c := range t.Children {
			next := sub
			if t.PeerID == self {
				next = c.PeerID
			}
			walk(c, lineage, next)
		}
	}
	// The view starts at this node; its lineage goes on with this node's
	// ancestors, so an admin scoped above this node covers the whole view.
	walk(n.viewer.View(ctx, -1), n.lineage()[1:], "")
	// A destination that reported counts even where the view has lost it
	// (its relay offline since this node started, or the machine moved).
	for _, d := range states {
		if !seen[d.Peer] {
			count(d.Peer, d.Via)
		}
	}
	for _, ss := range subtrees {
		st.Subtrees = append(st.Subtrees, *ss)
	}
	slices.SortFunc(st.Subtrees, func(x, y api.SubtreeStatus) int {
		if x.PeerID < y.PeerID {
			return -1
		}
		return 1
	})
	finished := 0
	for state, count := range st.Counts {
		if job.Final(state) {
			finished += count
		}
	}
	if st.Expected > 0 {
		st.DonePercent = float64(finished) * 100 / float64(st.Expected)
	}
	st.Done = finished == st.Expected
	return st, nil
}

// JobDestination implements api.Backend: one destination of a job (its
// peer ID, or a unique part of one), as reported up to this node, with the
// output tail it reported last and its history here.
func (n *Node) JobDestination(ctx context.Context, id, q string) (api.DestStatus, error) {
	q = strings.TrimPrefix(q, "…") // as 'job status' and 'tree' shorten them
	if q == "" {
		return api.DestStatus{}, api.BadRequest("which destination? give its peer ID or a unique part of it")
	}
	st, err := n.JobStatus(ctx, id, true)
	if err != nil {
		return api.DestStatus{}, err
	}
	var found []string
	for p := range st.Destinations {
		if p == q {
			found = []string{p}
			break
		}
		if strings.Contains(p, q) {
			found = append(found, p)
		}
	}
	slices.Sort(found)
	switch len(found) {
	case 0:
		return api.DestStatus{}, &api.Error{Status: http.StatusNotFound,
			Message: fmt.Sprintf("%q is not a destination of job %s here ('swdist tree --job %s' shows them)", q, id, id)}
	case 1:
	default:
		return api.DestStatus{}, api.BadRequest("%q matches %d destinations of job %s (%s…): give more of the peer ID",
			q, len(found), id, strings.Join(found[:min(3, len(found))], ", "))
	}
	d, ok, err := n.store.JobState(ctx, id, found[0])
	if err != nil {
		return api.DestStatus{}, err
	}
	out := api.DestStatus{JobID: id, PeerID: found[0], State: "not reported", History: []api.DestTransition{}}
	if ok {
		out.State, out.At, out.Reason, out.Exit, out.Output, out.Via = d.State, d.At, d.Reason, d.Exit, d.Output, d.Via
		if d.State == job.Fetching {
			out.Held, out.Total = d.Held, d.Total
		}
	}
	hist, err := n.store.JobHistory(ctx, id, found[0])
	if err != nil {
		return api.DestStatus{}, err
	}
	for _, h := range hist {
		out.History = append(out.History, api.DestTransition{State: h.State, At: h.At, Reason: h.Reason, Exit: h.Exit, Held: h.Held, Total: h.Total})
	}
	return out, nil
}

// markWaiting, on a managing node that accepted a manifest, reports
// "waiting" for each of its direct children the job targets that is offline
// now: the job is held here for it, and the nodes above see that instead
// of "not reported". Whatever the child reports once back replaces it.
func (n *Node) markWaiting(ctx context.Context, v gossip.Verified) {
	lineage := n.lineage()
	var reports []report.Report
	now := time.Now().UnixMilli()
	for _, c := range n.registry.List() {
		if c.Online || c.Revoked {
			continue
		}
		lin := append([]string{c.PeerID.String()}, lineage...)
		if !destination(v.Target, v.Admin.Scope.String(), string(c.Role), c.Site, c.Groups, lin) {
			continue
		}
		body, err := cert.Marshal(store.JobState{Job: v.JobID, State: store.StateWaiting, Reason: "offline; held by its relay"})
		if err != nil {
			n.log.Error("encode waiting state", "err", err)
			return
		}
		reports = append(reports, report.Report{ID: v.JobID + "/" + c.PeerID.String() + "/" + store.StateWaiting,
			Origin: c.PeerID, Kind: store.KindJobStatus, At: now, Body: body})
	}
	if len(reports) == 0 {
		return
	}
	if err := n.store.Apply(ctx, n.host.ID(), reports, n.parent != ""); err != nil {
		n.log.Error("report waiting destinations", "job", v.JobID, "err", err)
		return
	}
	n.reports.Wake()
}

// targetsBelow says whether a node below this one may be a destination of
// v, from this node's view of its subtree. Where the view cannot tell (a
// child relay offline or not answering, whose subtree is missing), it says
// yes: the manifest is kept and passed on, as without the view.
func (n *Node) targetsBelow(ctx context.Context, v gossip.Verified) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lineage := n.lineage()
	scope := v.Admin.Scope.String()
	var walk func(t tree.Node, lineage []string) bool
	walk = func(t tree.Node, lineage []string) bool {
		lineage = append([]string{t.PeerID}, lineage...)
		if destination(v.Target, scope, t.Role, t.Site, t.Groups, lineage) {
			return true
		}
		if t.Error != "" || len(t.Children) < t.ChildrenCount || (t.Role == string(cert.RoleRelay) && !t.Online) {
			return true // part of its subtree is not in the view
		}
		return slices.ContainsFunc(t.Children, func(c tree.Node) bool { return walk(c, lineage) })
	}
	view := n.viewer.View(ctx, -1)
	return slices.ContainsFunc(view.Children, func(c tree.Node) bool { return walk(c, lineage) })
}

// lineage is this node's chain as peer IDs: this node first, the root last.
func (n *Node) lineage() []string {
	var out []string
	for _, c := range n.selfCerts() {
		out = append(out, c.PeerID.String())
	}
	return out
}

// destination says whether a node (its role, site and groups, and its
// lineage: itself first, the root last) is a destination of a job for
// target by an administrator of scope, which must be the node or above it.
func destination(target gossip.Selector, scope, role, site string, groups, lineage []string) bool {
	return target.MatchNode(role, site, groups, lineage) && slices.Contains(lineage, scope)
}
