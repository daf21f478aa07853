package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/store"
)

// sumAt is n's count of machines per value; empty while a field is not
// reported yet.
func sumAt(t *testing.T, n *node.Node, q api.InventoryQuery) map[string]int {
	t.Helper()
	s, err := n.InventorySum(context.Background(), q)
	if err != nil {
		return map[string]int{}
	}
	out := map[string]int{}
	for _, r := range s.Rows {
		out[r.Value] = r.Count
	}
	return out
}

// TestInventoryUpTheTree: every node collects its real inventory; the
// server holds all of them, a relay its subtree; a custom field set on a
// client and an inventory job both reach the server.
func TestInventoryUpTheTree(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	all := []string{"server", "relay-a", "relay-b", "a1", "a2", "b1"}
	eventually(t, "the server holds every machine's inventory", func() bool {
		return sumAt(t, c.nodes["server"], api.InventoryQuery{By: []string{"role"}})["client"] == 3 &&
			sumAt(t, c.nodes["server"], api.InventoryQuery{By: []string{"site"}})[inventory.None] == 0 &&
			len(mustList(t, c.nodes["server"], api.InventoryQuery{})) == len(all)
	})
	rows := mustList(t, c.nodes["relay-a"], api.InventoryQuery{Fields: []string{"peer"}})
	got := map[string]bool{}
	for _, r := range rows {
		got[r.Peer] = true
	}
	if len(got) != 3 || !got[c.id("relay-a").String()] || !got[c.id("a1").String()] || !got[c.id("a2").String()] {
		t.Errorf("relay-a holds %v, want itself, a1 and a2", got)
	}

	if _, err := c.nodes["a1"].InventorySet(ctx, api.CustomRequest{Key: "owner", Value: "shop 12"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the server sees a1's owner", func() bool {
		return sumAt(t, c.nodes["server"], api.InventoryQuery{By: []string{"custom.owner"}, Where: []string{"site=a"}})["shop 12"] == 1
	})
	if _, err := c.nodes["a1"].InventorySet(ctx, api.CustomRequest{Key: "Owner!", Value: "x"}); err == nil {
		t.Error("a bad custom key was accepted")
	}

	// An inventory job: each target reports again, and the job succeeds.
	key, adm := certifyAdmin(t, c, "server")
	sel, _ := gossip.ParseSelector([]string{"site=a", "role=client"})
	now := time.Now()
	s, err := gossip.Sign(gossip.Manifest{JobID: gossip.NewJobID(), Seq: 1, CreatedAt: now, NotBefore: now,
		ExpiresAt: now.Add(time.Hour), Type: "inventory", Target: sel}, key, adm)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := gossip.Encode(s)
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: raw})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", job.ID, "both clients of site a ran the inventory job", func(s api.JobStatus) bool {
		return s.Counts["succeeded"] == 2
	})
	m, err := c.nodes["server"].InventoryShow(ctx, c.id("a2").String()[40:])
	if err != nil {
		t.Fatal(err)
	}
	if m.Seq < 2 || m.Fields["hostname"].Value == "" {
		t.Errorf("a2 at the server: report %d, fields %v", m.Seq, m.Fields)
	}
}

func mustList(t *testing.T, n *node.Node, q api.InventoryQuery) []inventory.Row {
	t.Helper()
	rows, err := n.InventoryList(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestBadInventoryRefused: a relay refuses an absurd inventory report from
// a child with a counted reason, acknowledges it (so the child moves on),
// and still applies the good reports of the same batch.
func TestBadInventoryRefused(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	a1 := c.id("a1")
	codec, _ := inventory.NewCodec()
	var inv inventory.Inventory
	inv.Set("hostname", "fine")
	good, _ := codec.Encode(inventory.FullDelta(inv, 1000))
	bad := func(i int, body []byte) report.Report {
		return report.Report{ID: fmt.Sprintf("inv/bad/%d", i), Origin: a1, Kind: store.KindInventory, At: time.Now().UnixMilli(), Body: body}
	}
	batch := []report.Report{
		bad(1, []byte("not zstd at all")),
		bad(2, make([]byte, inventory.MaxBody+1)),
		{ID: "inv/good", Origin: a1, Kind: store.KindInventory, At: time.Now().UnixMilli(), Body: good},
	}
	if err := c.nodes["relay-a"].ApplyReportsFrom(ctx, a1, batch); err != nil {
		t.Fatalf("the batch was not acknowledged: %v", err)
	}
	st, err := c.nodes["relay-a"].InventoryStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Refused["malformed"] != 1 || st.Refused["oversized"] != 1 {
		t.Errorf("refused %v, want one malformed and one oversized", st.Refused)
	}
	eventually(t, "the good report reached the server", func() bool {
		m, err := c.nodes["server"].InventoryShow(ctx, a1.String())
		return err == nil && m.Fields["hostname"].Value == "fine"
	})
}
