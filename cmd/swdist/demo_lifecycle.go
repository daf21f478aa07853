package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
)

// demoSubmit signs f with alice's key, submits it on server and waits until
// every destination has ended; fewer than want succeeded is an error.
func demoSubmit(ctx context.Context, server *node.Node, f jobFlags, want int) (api.JobStatus, gossip.Manifest, error) {
	raw, m, err := f.sign()
	if err != nil {
		return api.JobStatus{}, m, err
	}
	if _, err := server.SubmitJob(ctx, api.JobSubmit{Manifest: raw}); err != nil {
		return api.JobStatus{}, m, err
	}
	for {
		st, err := server.JobStatus(ctx, m.JobID, false)
		if err != nil {
			return st, m, err
		}
		if st.Done {
			if st.Counts["succeeded"] != want {
				return st, m, fmt.Errorf("the demo's %s job: %s", f.typ, statusLine(st))
			}
			return st, m, nil
		}
		select {
		case <-ctx.Done():
			return st, m, fmt.Errorf("the demo's %s job did not finish: %s: %w", f.typ, statusLine(st), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// demoStep is one job of the demo's last part: what it did at the server.
type demoStep struct {
	Type   string        `json:"type"`
	ID     string        `json:"id"`
	Status api.JobStatus `json:"status"`
}

// demoLifecycle runs the job types the demo has not shown yet: a transfer
// stages hello@1.0 on site a's relay, a delete removes it there, an
// uninstall takes it off site b's clients, and an inventory job has every
// machine report at once, so that the server counts no swdist software.
func (a *app) demoLifecycle(ctx context.Context, dir string, nodes map[string]*node.Node, say func(string, ...any)) ([]demoStep, error) {
	server := nodes["server"]
	key := filepath.Join(dir, "alice.key")
	resolve := func(ref string) (api.Package, error) { return server.FindPackage(ctx, ref) }
	steps := []struct {
		f    jobFlags
		want int
		what string
	}{
		{jobFlags{typ: "transfer", pkg: "hello@1.0", targets: []string{"role=relay", "site=a"}}, 1, "stages hello@1.0 on site a's relay"},
		{jobFlags{typ: "delete", pkg: "hello@1.0", targets: []string{"role=relay", "site=a"}}, 1, "deletes it there again"},
		{jobFlags{typ: "uninstall", pkg: "hello", targets: []string{"site=b", "role=client"}}, demoInstalls, "uninstalls hello from site b's clients"},
		{jobFlags{typ: "inventory", targets: []string{"all"}}, len(demoLayout), "has every machine report its inventory now"},
	}
	var out []demoStep
	say("")
	for _, s := range steps {
		s.f.signKey, s.f.resolve, s.f.expires, s.f.timeout = key, resolve, time.Hour, time.Minute
		st, m, err := demoSubmit(ctx, server, s.f, s.want)
		if err != nil {
			return out, err
		}
		say("Alice %s (%s, 'swdist job create --type %s'): %s.", s.what, m.Target, s.f.typ, statusLine(st))
		out = append(out, demoStep{Type: s.f.typ, ID: m.JobID, Status: st})
	}
	q := api.InventoryQuery{By: []string{"software.name"}, Where: []string{"software.source=swdist"}}
	for {
		sum, err := server.InventorySum(ctx, q)
		if err == nil && sum.Machines == 0 {
			break
		}
		if err != nil {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("waiting for the server to count no swdist software: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	say("The server now counts no machine with software installed by swdist.")
	return out, nil
}
