package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/store/storetest"
)

type machineSim struct {
	id   peer.ID
	inv  inventory.Inventory
	seq  uint64
	last inventory.Inventory
}

func newMachine(t *testing.T, host, osVersion, openssl string, freeGiB int) *machineSim {
	var inv inventory.Inventory
	inv.Set("hostname", host)
	inv.Set("os.version", osVersion)
	inv.Set("memory.total", fmt.Sprint(8<<30))
	inv.Add("software", inventory.Item{"name": "openssl", "version": openssl, "arch": "amd64", "source": "dpkg"})
	inv.Add("software", inventory.Item{"name": "bash", "version": "5.2", "arch": "amd64", "source": "dpkg"})
	inv.Add("disk", inventory.Item{"mount": "/", "size": fmt.Sprint(100 << 30), "free": fmt.Sprint(freeGiB << 30)})
	return &machineSim{id: certtest.ID(t, certtest.NewKey(t)), inv: inv}
}

// report makes the machine's next report: full the first time, else the
// delta from what it last reported.
func (m *machineSim) report(t *testing.T, c *inventory.Codec, full bool) report.Report {
	m.seq++
	d := inventory.FullDelta(m.inv, m.seq)
	if !full {
		d = inventory.Diff(m.last, m.inv, m.seq)
	}
	m.last = m.inv.Clone()
	body, err := c.Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	return report.Report{ID: fmt.Sprintf("inv/%s/%d", m.id, m.seq), Origin: m.id, Kind: KindInventory, At: time.Now().UnixMilli(), Body: body}
}

func openTemp(t *testing.T, dsn string) *Store {
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func apply(t *testing.T, s *Store, rs ...report.Report) {
	t.Helper()
	if err := s.Apply(context.Background(), rs[0].Origin, rs, false); err != nil {
		t.Fatal(err)
	}
}

func TestInventoryApply(t *testing.T) { storetest.Each(t, testInventoryApply) }

func testInventoryApply(t *testing.T, dsn string) {
	ctx := context.Background()
	s := openTemp(t, dsn)
	c, _ := inventory.NewCodec()
	m := newMachine(t, "till-1", "12", "3.0.1", 40)
	apply(t, s, m.report(t, c, true))

	// An upgrade, a changed field and a disk filling up.
	m.inv.Set("os.version", "13")
	delete(m.inv.Items["software"], "dpkg|openssl|amd64|3.0.1")
	m.inv.Add("software", inventory.Item{"name": "openssl", "version": "3.0.2", "arch": "amd64", "source": "dpkg"})
	m.inv.Add("disk", inventory.Item{"mount": "/", "size": fmt.Sprint(100 << 30), "free": fmt.Sprint(5 << 30)})
	r2 := m.report(t, c, false)
	apply(t, s, r2)
	apply(t, s, r2) // a resend changes nothing

	got, err := s.Machine(ctx, m.id.String(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fields["os.version"].Value != "13" || got.Stale || got.Seq != 2 {
		t.Errorf("machine %+v", got)
	}
	var sw []string
	for _, it := range got.Items["software"] {
		sw = append(sw, it.Item["name"]+" "+it.Item["version"])
	}
	if diff := cmp.Diff([]string{"bash 5.2", "openssl 3.0.2"}, sw); diff != "" {
		t.Error(diff)
	}
	var hist []string
	for _, h := range got.History {
		o, n := "", ""
		if h.Old != nil {
			o = *h.Old
		}
		if h.New != nil {
			n = *h.New
		}
		hist = append(hist, h.Field+": "+o+" -> "+n)
	}
	// The disk's free space is not history; the upgrade and the field are.
	want := []string{"software:  -> openssl 3.0.2 amd64 (dpkg)", "software: openssl 3.0.1 amd64 (dpkg) -> ", "os.version: 12 -> 13"}
	if diff := cmp.Diff(want, hist, cmp.Transformer("sort", sortStrings)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	var items, attrs int
	s.db.QueryRow(`SELECT count(*) FROM inv_items WHERE kind = 'disk'`).Scan(&items)
	s.db.QueryRow(`SELECT count(*) FROM inv_item_attrs a JOIN inv_items i ON i.id = a.item WHERE i.kind = 'disk'`).Scan(&attrs)
	if items != 1 || attrs != 3 {
		t.Errorf("%d disk items with %d attributes stored, want the one the machine has now (old ones deleted)", items, attrs)
	}

	// A delta on a base this node never saw (it lost one) marks the
	// machine stale until its next full report.
	m.inv.Set("os.version", "14")
	m.report(t, c, false) // lost
	m.inv.Set("hostname", "till-one")
	apply(t, s, m.report(t, c, false))
	if got, _ := s.Machine(ctx, m.id.String(), 0); !got.Stale || got.Fields["hostname"].Value != "till-one" {
		t.Errorf("after a lost delta: stale %v, hostname %q", got.Stale, got.Fields["hostname"].Value)
	}
	apply(t, s, m.report(t, c, true))
	if got, _ := s.Machine(ctx, m.id.String(), 0); got.Stale || got.Fields["os.version"].Value != "14" {
		t.Errorf("after a full report: stale %v, os.version %q", got.Stale, got.Fields["os.version"].Value)
	}
}

func sortStrings(in []string) []string { return slices.Sorted(slices.Values(in)) }

func TestInventoryQueries(t *testing.T) { storetest.Each(t, testInventoryQueries) }

func testInventoryQueries(t *testing.T, dsn string) {
	ctx := context.Background()
	s := openTemp(t, dsn)
	c, _ := inventory.NewCodec()
	for _, m := range []*machineSim{
		newMachine(t, "a1", "12", "3.0.1", 40),
		newMachine(t, "a2", "12", "3.0.1", 5),
		newMachine(t, "b1", "12", "3.0.2", 50),
		newMachine(t, "b2", "11", "1.1.1", 2),
	} {
		apply(t, s, m.report(t, c, true))
	}
	e := inventory.Engine{Src: s}
	cond := func(w ...string) []inventory.Cond {
		var out []inventory.Cond
		for _, x := range w {
			c, err := inventory.ParseCond(x)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
		return out
	}
	sums := []struct {
		name string
		q    inventory.Query
		want map[string]int
	}{
		{"by os.version", inventory.Query{By: []string{"os.version"}}, map[string]int{"12": 3, "11": 1}},
		{"openssl versions", inventory.Query{By: []string{"software.version"}, Where: cond("software.name=openssl")},
			map[string]int{"3.0.1": 2, "3.0.2": 1, "1.1.1": 1}},
		{"two fields", inventory.Query{By: []string{"os.version", "software.version"}, Where: cond("software.name=openssl")},
			map[string]int{"12 / 3.0.1": 2, "12 / 3.0.2": 1, "11 / 1.1.1": 1}},
		{"low disk", inventory.Query{By: []string{"os.version"}, Where: cond("disk.free<10G")}, map[string]int{"12": 1, "11": 1}},
		{"regex", inventory.Query{By: []string{"hostname"}, Where: cond("hostname~^b")}, map[string]int{"b1": 1, "b2": 1}},
		{"missing field", inventory.Query{By: []string{"hostname"}, Where: cond("software.name=nginx")}, map[string]int{}},
	}
	for _, tt := range sums {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Sum(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			counts := map[string]int{}
			for _, r := range got.Rows {
				counts[r.Value] = r.Count
			}
			if diff := cmp.Diff(tt.want, counts); diff != "" {
				t.Error(diff)
			}
		})
	}
	st, err := e.Sum(ctx, inventory.Query{By: []string{"os.version"}, Stats: []string{"disk.free"}})
	if err != nil {
		t.Fatal(err)
	}
	if a := st.Totals["disk.free"]; a == nil || a.N != 4 || a.Min != 2<<30 || a.Max != 50<<30 {
		t.Errorf("disk.free totals %+v", a)
	}
	rows, err := e.List(ctx, inventory.Query{Where: cond("disk.free<10G"), Fields: []string{"hostname", "disk.free"}})
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, r := range rows {
		hosts = append(hosts, r.Values["hostname"][0])
	}
	if diff := cmp.Diff([]string{"a2", "b2"}, hosts, cmp.Transformer("sort", sortStrings)); diff != "" {
		t.Error(diff)
	}
	for _, bad := range []inventory.Query{
		{By: []string{"os.verison"}},
		{By: []string{"hostname"}, Where: cond("software.nme=x")},
	} {
		_, err := e.Sum(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), "did you mean") && !strings.Contains(err.Error(), "software has") {
			t.Errorf("query %+v: error %v, want close names", bad, err)
		}
	}
}
