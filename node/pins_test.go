package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/config"
)

func pkgIn(t *testing.T, c *cluster, name, cid string) (api.Package, bool) {
	t.Helper()
	ps, err := c.nodes[name].ListPackages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.CID == cid {
			return p, true
		}
	}
	return api.Package{}, false
}

// TestPinsAndBudget: a relay keeps a package a job named until the job
// expires, says so in 'package ls', and, over its block budget, removes a
// package that nothing pins while it keeps the pinned one; the client that
// installed it keeps it as installed.
func TestPinsAndBudget(t *testing.T) {
	c := newCluster(t)
	c.tweak = func(cfg *config.Config) {
		if cfg.Role == string(cert.RoleRelay) {
			cfg.Blocks.Budget = config.SizeOf(3 << 19) // 1.5 MiB: room for one 1 MiB package, not two
		}
	}
	c.oneClient()
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	p1 := randomPackage(t, c, "server", 1<<20, 11)
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 1, p1, nil, "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", job.ID, "a1 installed p1", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })

	got, ok := pkgIn(t, c, "relay-a", p1.CID)
	if !ok || !got.Held || len(got.Pins) != 1 || got.Pins[0].Job != job.ID || got.Pins[0].Until == nil {
		t.Fatalf("relay-a's package ls for p1: %+v (found %v); want it held, pinned by job %s", got, ok, job.ID)
	}
	if d := time.Until(*got.Pins[0].Until); d < 50*time.Minute || d > 61*time.Minute {
		t.Errorf("p1 pinned until %s, want the job's expiry, an hour from now", got.Pins[0].Until)
	}
	if got, _ := pkgIn(t, c, "a1", p1.CID); !got.Installed {
		t.Errorf("a1's package ls for p1: %+v; want installed", got)
	}
	if got, _ := pkgIn(t, c, "server", p1.CID); len(got.Pins) != 1 || got.Pins[0].Job != "" {
		t.Errorf("the server's package ls for p1: %+v; want pinned as added here", got)
	}

	// A second package fetched on the relay by hand: pinned by nothing,
	// over the budget, so removed; p1 stays.
	p2 := randomPackage(t, c, "server", 1<<20, 12)
	if _, err := c.nodes["relay-a"].FetchPackage(ctx, p2.CID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay-a removed the unpinned p2", func() bool { _, ok := pkgIn(t, c, "relay-a", p2.CID); return !ok })
	if got, ok := pkgIn(t, c, "relay-a", p1.CID); !ok || !got.Held {
		t.Errorf("relay-a lost the pinned p1: %+v", got)
	}
	// What was removed comes back on demand.
	if got, err := c.nodes["relay-a"].FetchPackage(ctx, p2.CID); err != nil || !got.Held {
		t.Errorf("fetch p2 again: %+v, %v", got, err)
	}
}

// TestWANRate: a relay whose WAN link is limited fetches no faster than
// its wan.rate while the limit's window is open, and at full speed outside
// it. The limit is seen through a deadline the paced fetch cannot meet (1
// MiB at 64 KiB/s takes 16 s), not by timing the fetch.
func TestWANRate(t *testing.T) {
	later := time.Now().Add(3 * time.Hour)
	closed := fmt.Sprintf("%02d:%02d-%02d:%02d", later.Hour(), later.Minute(), later.Add(time.Hour).Hour(), later.Minute())
	c := newCluster(t)
	c.tweak = func(cfg *config.Config) {
		if cfg.Role == string(cert.RoleRelay) {
			cfg.WAN.Rate = config.SizeOf(64 << 10)
			if cfg.Site == "b" {
				cfg.WAN.Window = closed // the limit is not in force now
			}
		}
	}
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	c.join("relay-b", "server", cert.RoleRelay, "b")
	for _, name := range []string{"relay-a", "relay-b"} {
		eventually(t, name+" online", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
	}
	p := randomPackage(t, c, "server", 1<<20, 13)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if _, err := c.nodes["relay-a"].FetchPackage(ctx, p.CID); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("relay-a, limited to 64 KiB/s, fetched 1 MiB within 4 s (err %v)", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if got, err := c.nodes["relay-b"].FetchPackage(ctx2, p.CID); err != nil || !got.Held {
		t.Errorf("relay-b, outside its limit's window: %+v, %v", got, err)
	}
}
