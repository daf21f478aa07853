package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/job"
	"github.com/swdist/swdist/node/store"
)

// customFile is where 'swdist inventory set' writes, in inventory.d: read
// last, so it wins over the operator's own files.
const customFile = "zz-swdist-set.conf"

// startInventory starts this machine's inventory agent.
func (n *Node) startInventory(ctx context.Context) {
	c := n.Cert()
	collectors := []inventory.Collector{
		inventory.System{Identity: inventory.Identity{Role: string(c.Role), Site: c.Site, Groups: c.Groups, Version: Version}},
		inventory.Disks{},
		inventory.Packages{},
		inventory.Swdist{List: n.installedForInventory},
		inventory.Custom{Dir: n.home.InventoryDir()},
	}
	if n.opts.InventoryCollectors != nil {
		collectors = n.opts.InventoryCollectors
	}
	n.inv = inventory.NewAgent(inventory.AgentConfig{
		Collectors: collectors,
		Timeout:    n.cfg.Inventory.Timeout.Duration,
		Every:      n.cfg.Inventory.Every.Duration,
		FullEvery:  n.cfg.Inventory.FullEvery.Duration,
		Load:       n.loadOwnInventory,
		Commit:     n.commitOwnInventory,
		Logger:     n.log,
	})
	n.goRun(ctx, "inventory", n.inv.Run)
}

func (n *Node) installedForInventory(ctx context.Context) ([]inventory.Installed, error) {
	list, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]inventory.Installed, len(list))
	for i, p := range list {
		out[i] = inventory.Installed{Name: p.Name, Version: p.Version, CID: p.CID, At: p.At}
	}
	return out, nil
}

func (n *Node) loadOwnInventory(ctx context.Context) (inventory.Reported, bool, error) {
	st, ok, err := n.store.LoadInventorySelf(ctx)
	if err != nil || !ok {
		return inventory.Reported{}, ok, err
	}
	inv, err := inventory.Unmarshal(st.Snapshot)
	if err != nil {
		// Start afresh with a full report rather than never report again.
		n.log.Warn("own inventory snapshot unreadable: a full inventory goes up next", "err", err)
		return inventory.Reported{Seq: st.Seq}, false, nil
	}
	return inventory.Reported{Seq: st.Seq, Inventory: inv, CollectedAt: st.CollectedAt, FullAt: st.FullAt}, true, nil
}

func (n *Node) commitOwnInventory(ctx context.Context, d inventory.Delta, next inventory.Reported) error {
	body, err := n.invCodec.Encode(d)
	if err != nil {
		return err
	}
	snap, err := next.Inventory.Marshal()
	if err != nil {
		return err
	}
	self := n.host.ID()
	r := report.Report{ID: fmt.Sprintf("inv/%s/%d", self, d.Seq), Origin: self, Kind: store.KindInventory,
		At: time.Now().UnixMilli(), Body: body}
	if err := n.store.ReportOwnInventory(ctx, r, n.parent != "", store.InventorySelf{
		Seq: next.Seq, Snapshot: snap, CollectedAt: next.CollectedAt, FullAt: next.FullAt,
	}); err != nil {
		return err
	}
	n.reports.Wake()
	return nil
}

// checkReports drops the inventory reports that are malformed, oversized or
// absurd (the first node they reach does, and so would any after it):
// counted by reason, logged, and acknowledged like the rest so that the
// child does not send them again.
func (n *Node) checkReports(from peer.ID, reports []report.Report) []report.Report {
	out := reports[:0:0]
	for _, r := range reports {
		if r.Kind == store.KindInventory {
			if _, err := n.invCodec.Decode(r.Body); err != nil {
				why := inventory.Reason(err)
				n.mu.Lock()
				n.invRefused[why]++
				n.mu.Unlock()
				n.log.Warn("inventory report refused", "from", from, "reason", why, "err", err)
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// inventoryJob runs an "inventory" job: collect and report now.
func (n *Node) inventoryJob(ctx context.Context, _ gossip.Manifest, step func(state, reason string)) (string, error) {
	step(job.Running, "")
	d, err := n.inv.CollectNow(ctx, "inventory job")
	if err != nil {
		return "", err
	}
	kind := "delta"
	if d.Full {
		kind = "full"
	}
	return fmt.Sprintf("inventory %d reported (%s, %d changes)", d.Seq, kind, d.Changes()), nil
}

func (n *Node) engine() inventory.Engine { return inventory.Engine{Src: n.store} }

func (n *Node) query(q api.InventoryQuery) (inventory.Query, error) {
	out := inventory.Query{By: q.By, Stats: q.Stats, Fields: q.Fields}
	for _, w := range q.Where {
		c, err := inventory.ParseCond(w)
		if err != nil {
			return out, api.BadRequest("--where %v", err)
		}
		out.Where = append(out.Where, c)
	}
	return out, nil
}

// queryErr makes a query's mistake (an unknown field) a 400.
func queryErr(err error) error {
	var qe *inventory.QueryError
	if errors.As(err, &qe) {
		return api.BadRequest("%v", err)
	}
	return err
}

// InventoryList implements api.Backend.
func (n *Node) InventoryList(ctx context.Context, q api.InventoryQuery) ([]inventory.Row, error) {
	iq, err := n.query(q)
	if err != nil {
		return nil, err
	}
	rows, err := n.engine().List(ctx, iq)
	return rows, queryErr(err)
}

// InventorySum implements api.Backend.
func (n *Node) InventorySum(ctx context.Context, q api.InventoryQuery) (inventory.Sum, error) {
	iq, err := n.query(q)
	if err != nil {
		return inventory.Sum{}, err
	}
	s, err := n.engine().Sum(ctx, iq)
	return s, queryErr(err)
}

// InventoryFields implements api.Backend.
func (n *Node) InventoryFields(ctx context.Context) ([]string, error) {
	return n.engine().KnownFields(ctx)
}

// InventoryShow implements api.Backend.
func (n *Node) InventoryShow(ctx context.Context, q string) (api.InventoryMachine, error) {
	id, err := n.store.FindMachine(ctx, q)
	if err != nil {
		if errors.Is(err, store.ErrNoMachine) {
			return api.InventoryMachine{}, &api.Error{Status: http.StatusNotFound, Message: err.Error()}
		}
		if errors.Is(err, store.ErrAmbiguous) {
			return api.InventoryMachine{}, api.BadRequest("%v", err)
		}
		return api.InventoryMachine{}, err
	}
	m, err := n.store.Machine(ctx, id, 50)
	if err != nil {
		return api.InventoryMachine{}, err
	}
	out := api.InventoryMachine{PeerID: m.Peer, ReportedAt: m.ReportedAt, FullAt: m.FullAt, Stale: m.Stale, Via: m.Via, Seq: m.Seq,
		Parts: map[string]time.Time{}, Fields: map[string]api.InventoryValue{}, Items: map[string][]api.InventoryItem{},
		Changes: []api.InventoryChange{}}
	seen := func(part string, at time.Time) {
		if at.After(out.Parts[part]) {
			out.Parts[part] = at
		}
	}
	for f, v := range m.Fields {
		out.Fields[f] = api.InventoryValue{Value: v.Value, ChangedAt: v.ChangedAt}
		seen(inventory.Part(f), v.ChangedAt)
	}
	for kind, its := range m.Items {
		for _, it := range its {
			out.Items[kind] = append(out.Items[kind], api.InventoryItem{Attrs: it.Item, Since: it.Since})
			seen(kind, it.Since)
		}
	}
	for _, c := range m.History {
		out.Changes = append(out.Changes, api.InventoryChange{At: c.At, Field: c.Field, Old: c.Old, New: c.New})
		seen(inventory.Part(c.Field), c.At)
	}
	return out, nil
}

// InventoryStats implements api.Backend.
func (n *Node) InventoryStats(ctx context.Context) (api.InventoryStats, error) {
	ms, err := n.store.Machines(ctx)
	if err != nil {
		return api.InventoryStats{}, err
	}
	st := api.InventoryStats{Machines: len(ms)}
	for _, m := range ms {
		if m.Stale {
			st.Stale++
		}
	}
	n.mu.Lock()
	st.Refused = maps.Clone(n.invRefused)
	n.mu.Unlock()
	return st, nil
}

// InventorySet implements api.Backend: writes a custom field to this
// machine's inventory.d and reports it.
func (n *Node) InventorySet(ctx context.Context, req api.CustomRequest) (api.CustomResult, error) {
	if err := inventory.CheckCustom(req.Key, req.Value); err != nil {
		return api.CustomResult{}, api.BadRequest("%v", err)
	}
	if strings.ContainsAny(req.Value, "\n\r") {
		return api.CustomResult{}, api.BadRequest("value for %q: one line only", req.Key)
	}
	dir := n.home.InventoryDir()
	path := filepath.Join(dir, customFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return api.CustomResult{}, fmt.Errorf("create %s: %w", dir, err)
	}
	fields, err := inventory.ReadCustomFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return api.CustomResult{}, fmt.Errorf("%w: fix or remove the file", err)
	}
	if fields == nil {
		fields = map[string]string{}
	}
	if req.Unset {
		delete(fields, req.Key)
	} else {
		fields[req.Key] = req.Value
	}
	var b strings.Builder
	b.WriteString("# Written by 'swdist inventory set'; read after the other files here.\n")
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		fmt.Fprintf(&b, "%s = %s\n", k, fields[k])
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return api.CustomResult{}, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return api.CustomResult{}, fmt.Errorf("write %s: %w", path, err)
	}
	n.inv.Trigger("custom field " + req.Key)
	return api.CustomResult{Key: req.Key, Value: req.Value, File: path}, nil
}

// InventoryCollect implements api.Backend.
func (n *Node) InventoryCollect(ctx context.Context) (api.Collected, error) {
	d, err := n.inv.CollectNow(ctx, "operator")
	if err != nil {
		return api.Collected{}, err
	}
	return api.Collected{Seq: d.Seq, Full: d.Full, Changes: d.Changes()}, nil
}
