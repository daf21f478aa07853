package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/store"
)

// addPackage builds a package of files into name's block store and
// records it there.
func addPackage(t *testing.T, c *cluster, name string, files map[string]string, pkgName, version string) api.Package {
	t.Helper()
	src := t.TempDir()
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bs, err := blocks.Open(c.home(name).Blocks())
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	res, err := pkg.Build(context.Background(), src, pkgName, version, bs, pkg.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.nodes[name].AddPackage(context.Background(), api.Package{CID: res.Root.String()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPackageThroughTheTree: two clients of a site fetch a package added on
// the server; their relay pulls each block from the server once, and
// serves both.
func TestPackageThroughTheTree(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: several chunks
	p := addPackage(t, c, "server", map[string]string{"bin/app": big, "etc/app.conf": "x = 1\n"}, "app", "1.0")
	// Both at once: the relay fetches each block once all the same.
	var wg sync.WaitGroup
	for _, name := range []string{"a1", "a2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.nodes[name].FetchPackage(ctx, p.CID)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			if !got.Held || got.Name != "app" || got.Chunks != p.Chunks {
				t.Errorf("%s: %+v", name, got)
			}
		}()
	}
	wg.Wait()
	served := c.nodes["server"].BlocksServed()
	if len(served) != 1 || served[c.id("relay-a")] != p.Chunks+1 {
		t.Errorf("the server served %v; want each of the %d blocks once, to relay-a", served, p.Chunks+1)
	}
	// The clients share the blocks (see TestSitePeersShare): relay-a
	// serves each at most once to each.
	if n := c.nodes["relay-a"].BlocksServed(); n[c.id("a1")] > p.Chunks+1 || n[c.id("a2")] > p.Chunks+1 || n[c.id("a1")]+n[c.id("a2")] < p.Chunks+1 {
		t.Errorf("relay-a served %v", n)
	}
	if _, err := c.nodes["b1"].FetchPackage(ctx, "bafkreig6j5e4uiloae7hvjw5ifoqnlfbbqyg4kcp7gtx33odcsycbl4xrq"); err == nil {
		t.Error("fetching a package nobody has succeeded")
	}
}

// signInstall signs an install job for package p.
func signInstall(t *testing.T, key crypto.PrivKey, adm admin.Signed, seq uint64, p api.Package, params map[string]string, target ...string) []byte {
	t.Helper()
	return signManifest(t, key, adm, seq, gossip.Manifest{Type: "install", Package: &gossip.Package{CID: p.CID, Size: p.StoredBytes},
		Params: params}, target...)
}

// TestInstall: an install job puts the package on its targets (its script
// runs there), the same version again is skipped, a failing script leaves
// nothing, and the server's inventory lists the software installed.
func TestInstall(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	p := addPackage(t, c, "server", map[string]string{"bin/hello": "#!/bin/sh\necho hello\n"}, "hello", "1.0")
	job1, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 1, p,
		map[string]string{"script": "./bin/hello > installed.txt"}, "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", job1.ID, "a1 and a2 installed it", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 })
	for _, name := range []string{"a1", "a2"} {
		got, err := os.ReadFile(filepath.Join(c.home(name).Dir, "installed", "hello", "1.0", "installed.txt"))
		if err != nil || string(got) != "hello\n" {
			t.Errorf("%s: the script's output %q, %v", name, got, err)
		}
	}
	eventually(t, "the server's inventory lists hello 1.0 on both", func() bool {
		return sumAt(t, c.nodes["server"], api.InventoryQuery{By: []string{"software.version"},
			Where: []string{"software.name=hello", "software.source=swdist"}})["1.0"] == 2
	})

	// The same version again: skipped.
	job2, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 2, p, nil, "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", job2.ID, "a1 skipped it", func(s api.JobStatus) bool { return s.Counts["skipped"] == 1 })

	// Version 2 whose script fails: nothing of it stays, version 1 stays.
	p2 := addPackage(t, c, "server", map[string]string{"bin/hello": "#!/bin/sh\necho hello 2\n"}, "hello", "2.0")
	job3, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 3, p2,
		map[string]string{"script": "echo broken >&2; exit 4"}, "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	st := statusAt(t, c, "server", job3.ID, "a1 failed it", func(s api.JobStatus) bool { return s.Counts["failed"] == 1 })
	if len(st.Failed) != 1 || st.Failed[0].Exit != 4 || !strings.Contains(st.Failed[0].Output, "broken") || !strings.Contains(st.Failed[0].Reason, "nothing was installed") {
		t.Errorf("failed install: %+v", st.Failed)
	}
	dir := filepath.Join(c.home("a1").Dir, "installed", "hello")
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "1.0" {
		t.Errorf("after a failed install of 2.0, %s holds %v; want 1.0 only", dir, entries)
	}
	// Version 2 with a good script: an upgrade, 1.0 goes.
	job4, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 4, p2, nil, "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", job4.ID, "a1 upgraded", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
	entries, _ = os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "2.0" {
		t.Errorf("after the upgrade %s holds %v; want 2.0 only", dir, entries)
	}

	// Uninstall from a1: its files go, and the server's inventory knows.
	uninstall := func(seq uint64) string {
		t.Helper()
		j, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, seq,
			gossip.Manifest{Type: "uninstall", Params: map[string]string{"name": "hello"}}, "peer="+c.id("a1").String())})
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	statusAt(t, c, "server", uninstall(5), "a1 uninstalled hello", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
	if _, err := os.Stat(filepath.Join(dir, "2.0")); !os.IsNotExist(err) {
		t.Errorf("hello 2.0 still on a1: %v", err)
	}
	eventually(t, "the server's inventory lists hello on a2 only", func() bool {
		return sumAt(t, c.nodes["server"], api.InventoryQuery{By: []string{"software.version"},
			Where: []string{"software.name=hello", "software.source=swdist"}})["1.0"] == 1 &&
			sumAt(t, c.nodes["server"], api.InventoryQuery{By: []string{"software.version"},
				Where: []string{"software.name=hello", "software.source=swdist"}})["2.0"] == 0
	})
	statusAt(t, c, "server", uninstall(6), "uninstalling again is skipped", func(s api.JobStatus) bool { return s.Counts["skipped"] == 1 })

	// Transfer: b1 stages the package, installs nothing.
	tr, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, 7,
		gossip.Manifest{Type: "transfer", Package: &gossip.Package{CID: p2.CID, Size: p2.StoredBytes}}, "peer="+c.id("b1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", tr.ID, "b1 staged it", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
	if got, err := c.nodes["b1"].FindPackage(ctx, "hello@2.0"); err != nil || !got.Held {
		t.Errorf("b1 after the transfer: %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(c.home("b1").Dir, "installed")); !os.IsNotExist(err) {
		t.Errorf("a transfer installed something: %v", err)
	}
	// relay-b prefetched it for b1 and keeps it; a delete job removes it
	// from relay-b and b1.
	eventually(t, "relay-b lists the package it prefetched", func() bool {
		got, err := c.nodes["relay-b"].FindPackage(ctx, "hello@2.0")
		return err == nil && got.Held
	})
	del, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, 8,
		gossip.Manifest{Type: "delete", Package: &gossip.Package{CID: p2.CID, Size: p2.StoredBytes}}, "site=b")})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", del.ID, "relay-b and b1 deleted it", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 })
	for _, name := range []string{"relay-b", "b1"} {
		if got, err := c.nodes[name].FindPackage(ctx, "hello@2.0"); err == nil {
			t.Errorf("%s still lists the package: %+v", name, got)
		}
	}
}

// TestInstallInterrupted: a client stopped while its install script runs
// comes back with the job failed ("interrupted") and no trace of the
// half-done install.
func TestInstallInterrupted(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	p := addPackage(t, c, "server", map[string]string{"bin/slow": "x"}, "slow", "1.0")
	a1 := c.id("a1").String()
	started := filepath.Join(c.home("a1").Dir, "started")
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 1, p,
		map[string]string{"script": "touch " + started + "; sleep 30"}, "peer="+a1)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 runs the install script", func() bool { _, err := os.Stat(started); return err == nil })
	if err := c.nodes["a1"].Close(); err != nil {
		t.Fatal(err)
	}
	c.start("a1")
	st := statusAt(t, c, "server", job.ID, "a1 ended the install as failed", func(s api.JobStatus) bool { return s.Counts["failed"] == 1 })
	if len(st.Failed) != 1 || !strings.Contains(st.Failed[0].Reason, "interrupted") {
		t.Errorf("failed: %+v", st.Failed)
	}
	entries, _ := os.ReadDir(filepath.Join(c.home("a1").Dir, "installed", "slow"))
	if len(entries) != 0 {
		t.Errorf("left after the interrupted install: %v", entries)
	}
}

// TestInstallConditions: a machine that does not meet a job's install
// conditions skips it and says which.
func TestInstallConditions(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	p := addPackage(t, c, "server", map[string]string{"f": "x"}, "cond", "1.0")
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	for i, tc := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"arch": other}, "condition arch=" + other + " not met"},
		{map[string]string{"os": "plan9"}, "condition os=plan9 not met"},
		{map[string]string{"min_free": "1000T"}, "condition min_free=1000T not met"},
	} {
		j, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, uint64(i+1), p, tc.params, "peer="+c.id("a1").String())})
		if err != nil {
			t.Fatal(err)
		}
		st := statusAt(t, c, "server", j.ID, "a1 skipped it", func(s api.JobStatus) bool { return s.Counts["skipped"] == 1 })
		if len(st.Skipped) != 1 || !strings.Contains(st.Skipped[0].Reason, tc.want) {
			t.Errorf("skipped: %+v, want %q", st.Skipped, tc.want)
		}
	}
	ok, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 9, p,
		map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH, "min_free": "1K"}, "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", ok.ID, "a1 installed it", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
}

// TestInstallMissingPackage: a package nobody holds fails the job with a
// reason, not a hang.
func TestInstallMissingPackage(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	ghost := api.Package{CID: "bafyreibmuv3wylhvz2t2ycq5kr5o5fgurmeh6wpk46xjcrhypl333rlp2u", StoredBytes: 10}
	j, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 1, ghost, nil, "peer="+c.id("b1").String())})
	if err != nil {
		t.Fatal(err)
	}
	st := statusAt(t, c, "server", j.ID, "b1 failed it", func(s api.JobStatus) bool { return s.Counts["failed"] == 1 })
	if len(st.Failed) != 1 || !strings.Contains(st.Failed[0].Reason, "not found at the parent") {
		t.Errorf("failed: %+v", st.Failed)
	}
}

// TestFetchProgress: a destination says "fetching" with the bytes it
// holds and the package's total, and that goes up the tree: job status
// sums the bytes of the fetching destinations, in all and per subtree,
// lists each one's (with destinations) and shows them per destination.
func TestFetchProgress(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: several chunks
	p := addPackage(t, c, "server", map[string]string{"bin/app": big}, "app", "1.0")
	res, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signInstall(t, key, adm, 1, p, nil, "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", res.ID, "a1 installed it", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
	d, err := c.nodes["server"].JobDestination(ctx, res.ID, c.id("a1").String())
	if err != nil {
		t.Fatal(err)
	}
	var fetches []api.DestTransition
	for _, h := range d.History {
		if h.State == "fetching" {
			fetches = append(fetches, h)
		}
	}
	if len(fetches) == 0 || len(fetches) > 12 || fetches[len(fetches)-1].Total == 0 || fetches[0].Reason == "" {
		t.Errorf("a1's fetching transitions at the server: %+v; want a few, with the package's bytes", fetches)
	}

	// Destinations in the middle of a fetch, as their reports say (a job
	// that waits for tomorrow, so that nothing of theirs overtakes these).
	now := time.Now()
	later, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, 2, gossip.Manifest{Type: "run",
		NotBefore: now.Add(20 * time.Hour), ExpiresAt: now.Add(24 * time.Hour), Params: map[string]string{"command": "true"}}, "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", later.ID, "all 3 scheduled", func(s api.JobStatus) bool { return s.Counts["scheduled"] == 3 })
	fetching := func(name string, held, total int64) report.Report {
		body, err := cert.Marshal(store.JobState{Job: later.ID, State: "fetching", Held: held, Total: total})
		if err != nil {
			t.Fatal(err)
		}
		return report.Report{ID: later.ID + "/" + c.id(name).String() + "/fetching/" + fmt.Sprint(held), Origin: c.id(name),
			Kind: store.KindJobStatus, At: time.Now().UnixMilli(), Body: body}
	}
	for _, r := range []struct {
		relay, client string
		held, total   int64
	}{{"relay-a", "a1", 300, 1000}, {"relay-a", "a2", 500, 1000}, {"relay-b", "b1", 0, 4000}} {
		if err := c.nodes[r.relay].ApplyReportsFrom(ctx, c.id(r.client), []report.Report{fetching(r.client, r.held, r.total)}); err != nil {
			t.Fatal(err)
		}
	}
	st := statusAt(t, c, "server", later.ID, "3 fetching", func(s api.JobStatus) bool { return s.Counts["fetching"] == 3 })
	if st.Fetching == nil || *st.Fetching != (api.FetchBytes{Destinations: 3, Held: 800, Total: 6000}) {
		t.Errorf("fetching in all: %+v", st.Fetching)
	}
	if got := st.Progress[c.id("a2").String()]; got != (api.FetchBytes{Destinations: 1, Held: 500, Total: 1000}) {
		t.Errorf("a2's progress: %+v", got)
	}
	for _, ss := range st.Subtrees {
		want := api.FetchBytes{Destinations: 2, Held: 800, Total: 2000}
		if ss.PeerID == c.id("relay-b").String() {
			want = api.FetchBytes{Destinations: 1, Held: 0, Total: 4000}
		}
		if ss.Fetching == nil || *ss.Fetching != want {
			t.Errorf("subtree of %s fetching %+v, want %+v", ss.PeerID, ss.Fetching, want)
		}
	}
	if d, err := c.nodes["server"].JobDestination(ctx, later.ID, c.id("a1").String()); err != nil || d.Held != 300 || d.Total != 1000 {
		t.Errorf("a1 at the server: %+v, %v", d, err)
	}
}
