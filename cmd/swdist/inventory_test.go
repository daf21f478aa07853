package main

import (
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/inventory"
)

// TestInventoryCLI drives inventory through the real binary: each daemon
// collects its machine's inventory; the server lists, sums, shows and
// exports all four, the relay its subtree; a custom field set on a client
// reaches the server; mistakes are usage errors that say what to do.
func TestInventoryCLI(t *testing.T) {
	p := buildTree(t)
	S := p.homes["S"]
	must(t, nil, p.homes["C1"], "inventory", "set", "asset-tag", "A-1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var s inventory.Sum
		r := cli(t, S, "inventory", "sum", "--by", "custom.asset-tag", "--by", "role", "--json")
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &s) == nil && s.Machines == 4 && hasRow(s, "A-1 / client", 1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never saw C1's asset tag with all four machines:\n%s%s", r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var rows []inventory.Row
	must(t, &rows, p.homes["R"], "inventory", "ls", "--json")
	if len(rows) != 3 {
		t.Errorf("the relay lists %d machines, want itself and its two clients", len(rows))
	}
	must(t, &rows, S, "inventory", "ls", "--where", "custom.asset-tag~^A-", "--fields", "peer,hostname", "--json")
	if len(rows) != 1 || rows[0].Peer != p.ids["C1"] {
		t.Errorf("ls --where custom.asset-tag~^A-: %+v", rows)
	}
	var m api.InventoryMachine
	must(t, &m, S, "inventory", "show", p.ids["C1"][len(p.ids["C1"])-10:], "--json")
	if m.PeerID != p.ids["C1"] || m.Fields["custom.asset-tag"].Value != "A-1" || m.Fields["hostname"].Value == "" {
		t.Errorf("show C1: %+v", m)
	}
	r := cli(t, S, "inventory", "export", "--format", "csv")
	recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if r.code != 0 || err != nil || len(recs) != 5 || recs[0][0] != "peer" {
		t.Errorf("export csv: exit %d, %v, %d records", r.code, err, len(recs))
	}
	must(t, nil, S, "inventory", "sum", "--by", "os.version") // the table prints

	// The reports that carried all this are counted per protocol and peer
	// (the counters' totals move once a second).
	for deadline := time.Now().Add(10 * time.Second); ; {
		var bw api.Bandwidth
		must(t, &bw, S, "stats", "bw", "--json")
		if bw.Protocols["/swdist/report/1.0.0"].In > 0 && len(bw.Peers) > 0 && bw.Peers[0].PeerID == p.ids["R"] && bw.Peers[0].Relation == "child" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats bw at the server: %+v", bw)
		}
		time.Sleep(200 * time.Millisecond)
	}
	must(t, nil, S, "stats", "bw")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inventory", "sum", "--by", "os.verison"}, "did you mean os.version"},
		{[]string{"inventory", "sum"}, "--by FIELD is required"},
		{[]string{"inventory", "ls", "--where", "disk.free<lots"}, "not a number"},
		{[]string{"inventory", "ls", "--where", "software.nam=x"}, "software has software.name"},
		{[]string{"inventory", "export", "--format", "xml"}, "use csv or json"},
		{[]string{"inventory", "set", "Bad Key", "x"}, "lower-case letters"},
	} {
		r := cli(t, S, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("swdist %v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// A machine the server holds nothing of is a failed operation, not a
	// mistake in the command line.
	if r := cli(t, S, "inventory", "show", "nosuchpeer"); r.code != 1 || !strings.Contains(r.stderr, "no inventory held") {
		t.Errorf("swdist inventory show nosuchpeer: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, "no inventory held")
	}
}

func hasRow(s inventory.Sum, value string, count int) bool {
	for _, r := range s.Rows {
		if r.Value == value {
			return r.Count == count
		}
	}
	return false
}
