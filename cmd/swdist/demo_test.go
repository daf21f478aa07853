package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/swdist/swdist/hierarchy/tree"
)

// TestDemo runs 'swdist demo --json' as the README's first command does and
// checks the tree it reports against the layout it promises.
func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--json"}, &out, &errOut); code != exitOK {
		t.Fatalf("demo exited %d: %s", code, errOut.String())
	}
	var res demoResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("demo --json is not a document: %v\n%s", err, out.String())
	}
	// Shape: role and site of every node, children in the order shown.
	type shape struct {
		role, site string
		kids       []shape
	}
	var project func(n tree.Node) shape
	project = func(n tree.Node) shape {
		if !n.Online {
			t.Errorf("%s %s (%s) is offline", n.Role, n.Site, n.PeerID)
		}
		if n.ChildrenCount != len(n.Children) {
			t.Errorf("%s %s lists %d children of %d", n.Role, n.Site, len(n.Children), n.ChildrenCount)
		}
		s := shape{role: n.Role, site: n.Site}
		for _, c := range n.Children {
			s.kids = append(s.kids, project(c))
		}
		return s
	}
	got := project(res.Tree)
	clients := func(site string) []shape {
		return []shape{{role: "client", site: site}, {role: "client", site: site}, {role: "client", site: site}}
	}
	want := shape{role: "server", site: "hq", kids: []shape{
		{role: "relay", site: "a", kids: append([]shape{{role: "relay", site: "c", kids: clients("c")}}, clients("a")...)},
		{role: "relay", site: "b", kids: clients("b")},
	}}
	var equal func(a, b shape) bool
	equal = func(a, b shape) bool {
		if a.role != b.role || a.site != b.site || len(a.kids) != len(b.kids) {
			return false
		}
		for i := range a.kids {
			if !equal(a.kids[i], b.kids[i]) {
				return false
			}
		}
		return true
	}
	if !equal(got, want) {
		t.Errorf("demo tree = %+v\nwant %+v", got, want)
	}
	if res.Outsider == "" {
		t.Error("demo did not report the outsider")
	}
	// The job for site=c role=client reached exactly c1, c3 and, after it
	// came back, c2.
	slices.Sort(res.Job.For)
	if !slices.Equal(res.Job.For, []string{"c1", "c2", "c3"}) || res.Job.Offline != "c2" || !res.Job.CaughtUp {
		t.Errorf("demo job: %+v", res.Job)
	}
	if st := res.Job.Status; st.Expected != 3 || st.Counts["succeeded"] != 3 || st.DonePercent != 100 {
		t.Errorf("demo job status at the server: %+v", st)
	}
	if res.Install.Counts["succeeded"] != demoInstalls {
		t.Errorf("demo install: %+v", res.Install)
	}
	if len(res.Collect.Written) != demoCollects || len(res.Collect.Peers) != demoCollects || res.Collect.Peers[0].Files != 1 {
		t.Errorf("demo collect: %+v", res.Collect)
	}
	if len(res.Inventory) != 3 || res.Inventory[0].Machines != len(demoLayout) || counted(res.Inventory[1]) != len(demoShelves) ||
		len(res.Inventory[2].Rows) != 1 || res.Inventory[2].Rows[0].Value != "hello / 1.0" || res.Inventory[2].Rows[0].Count != demoInstalls {
		t.Errorf("demo inventory sums: %+v", res.Inventory)
	}
	// Transfer, delete, uninstall and inventory jobs, each succeeded at
	// every destination (demoSubmit fails the demo otherwise).
	var types []string
	for _, s := range res.Lifecycle {
		types = append(types, s.Type)
		if s.Status.Expected == 0 || s.Status.Counts["succeeded"] != s.Status.Expected {
			t.Errorf("demo %s job: %+v", s.Type, s.Status)
		}
	}
	if !slices.Equal(types, []string{"transfer", "delete", "uninstall", "inventory"}) {
		t.Errorf("demo's last jobs: %v", types)
	}
}
