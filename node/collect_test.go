package node_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
)

// signCollect signs a collect job of paths (max_size limit, if not empty).
func signCollect(t *testing.T, c *cluster, seq uint64, paths []string, limit string, target ...string) string {
	t.Helper()
	key, adm := certifyAdmin(t, c, "server")
	b, _ := json.Marshal(paths)
	params := map[string]string{node.ParamPaths: string(b)}
	if limit != "" {
		params[node.ParamMaxSize] = limit
	}
	res, err := c.nodes["server"].SubmitJob(context.Background(), api.JobSubmit{Manifest: signManifest(t, key, adm, seq,
		gossip.Manifest{Type: "collect", Params: params}, target...)})
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// filesAt is name's 'job files' for id, each destination by peer.
func filesAt(t *testing.T, c *cluster, name, id string, fetch bool) map[string]api.CollectedPeer {
	t.Helper()
	jf, err := c.nodes[name].JobFiles(context.Background(), id, fetch)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.CollectedPeer{}
	for _, p := range jf.Peers {
		out[p.PeerID] = p
	}
	return out
}

// dropBlocks removes a collection's root block from name's block store.
func dropBlocks(t *testing.T, c *cluster, name, root string) {
	t.Helper()
	bs, err := blocks.Open(c.home(name).Blocks())
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if err := bs.Delete(context.Background(), cid.MustParse(root)); err != nil {
		t.Fatal(err)
	}
}

// TestCollect: a collect job from the server to the clients under a relay
// gathers the files its paths match, the server fetches them through the
// relay, and 'job files' writes them per client, byte for byte; what
// cannot be collected is named. Nothing matching is skipped, too much
// fails, and a collection the server cannot reach names the peer.
func TestCollect(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	src := t.TempDir()
	big := strings.Repeat("2026-11-25 12:00:00 app started, all well\n", 20000) // ~840 KiB: several chunks
	want := map[string]string{"app/a.log": big, "app/b.log": "one line\n", "app/sub/c.txt": "in a directory\n", "app/sub/deeper/d.txt": "deeper\n"}
	for p, content := range want {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(src, "app", "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent", filepath.Join(src, "app", "sub", "dangling")); err != nil {
		t.Fatal(err)
	}
	paths := []string{src + "/app/*.log", src + "/app/sub", src + "/app/pipe", src + "/gone/*"}
	id := signCollect(t, c, 1, paths, "", "site=a", "role=client")
	statusAt(t, c, "server", id, "a1 and a2 collected", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 })

	// The server fetches each collection by itself, through relay-a.
	clients := []string{"a1", "a2"}
	eventually(t, "the server holds both collections", func() bool {
		got := filesAt(t, c, "server", id, false)
		return got[c.id("a1").String()].State == node.FilesCollected && got[c.id("a2").String()].State == node.FilesCollected
	})
	got := filesAt(t, c, "server", id, true)
	if len(got) != 2 {
		t.Errorf("job files lists %d destinations, want 2: %+v", len(got), got)
	}
	for _, name := range clients {
		e := got[c.id(name).String()]
		if e.Files != 4 || e.Bytes != int64(len(big)+9+15+7) || e.CID == "" {
			t.Errorf("%s: %+v", name, e)
		}
		skipped := strings.Join(e.Skipped, "\n")
		for _, w := range []string{"pipe: a named pipe: not collected", "dangling: no such file or directory", "gone/*: nothing matches"} {
			if !strings.Contains(skipped, w) {
				t.Errorf("%s: skipped %q, want it to say %q", name, e.Skipped, w)
			}
		}
	}
	// relay-a passed them on and keeps them for its own managers.
	ra := filesAt(t, c, "relay-a", id, false)
	if ra[c.id("a1").String()].State != node.FilesCollected {
		t.Errorf("relay-a: %+v", ra[c.id("a1").String()])
	}

	jf, err := c.nodes["server"].JobFiles(ctx, id, true)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	written, err := node.WriteJobFiles(ctx, c.home("server").Blocks(), jf, out)
	if err != nil || len(written) != 2 {
		t.Fatalf("written %v, %v", written, err)
	}
	for _, e := range jf.Peers {
		top := filepath.Join(out, e.Dir)
		for p, content := range want {
			b, err := os.ReadFile(filepath.Join(top, strings.TrimPrefix(src, "/"), p))
			if err != nil || string(b) != content {
				t.Errorf("%s: %s: %d bytes, %v; want %d bytes", e.Dir, p, len(b), err, len(content))
			}
		}
		n := 0
		filepath.WalkDir(top, func(_ string, d os.DirEntry, _ error) error {
			if !d.IsDir() {
				n++
			}
			return nil
		})
		if n != len(want) {
			t.Errorf("%s holds %d files, want %d", top, n, len(want))
		}
	}
	if _, err := node.WriteJobFiles(ctx, c.home("server").Blocks(), jf, out); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("writing into a directory that is not empty: %v", err)
	}

	// Nothing matches: skipped, with why.
	none := signCollect(t, c, 2, []string{src + "/nothing-*.log"}, "", "peer="+c.id("b1").String())
	st := statusAt(t, c, "server", none, "b1 skipped it", func(s api.JobStatus) bool { return s.Counts["skipped"] == 1 })
	if len(st.Skipped) != 1 || !strings.Contains(st.Skipped[0].Reason, "nothing matches") {
		t.Errorf("skipped: %+v", st.Skipped)
	}
	if e := filesAt(t, c, "server", none, true)[c.id("b1").String()]; e.State != "skipped" || !strings.Contains(e.Error, "nothing matches") {
		t.Errorf("job files of a job that matched nothing: %+v", e)
	}
	// More than max_size: failed, nothing collected, with why.
	tooBig := signCollect(t, c, 3, []string{src + "/app"}, "100K", "peer="+c.id("b1").String())
	st = statusAt(t, c, "server", tooBig, "b1 failed it", func(s api.JobStatus) bool { return s.Counts["failed"] == 1 })
	if len(st.Failed) != 1 || !strings.Contains(st.Failed[0].Reason, "more than the job's limit of 100 KiB") || !strings.Contains(st.Failed[0].Reason, "a.log") {
		t.Errorf("failed: %+v", st.Failed)
	}

	// A collection the server no longer holds is fetched again by 'job
	// files', through its relay; one it cannot reach names the peer.
	b1 := signCollect(t, c, 4, []string{src + "/app/b.log"}, "", "peer="+c.id("b1").String())
	statusAt(t, c, "server", b1, "b1 collected", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
	eventually(t, "the server holds b1's collection", func() bool {
		return filesAt(t, c, "server", b1, false)[c.id("b1").String()].State == node.FilesCollected
	})
	root := filesAt(t, c, "server", b1, false)[c.id("b1").String()].CID
	dropBlocks(t, c, "server", root)
	if e := filesAt(t, c, "server", b1, false)[c.id("b1").String()]; e.State != node.FilesNotFetched {
		t.Errorf("after its blocks went: %+v", e)
	}
	if err := c.nodes["relay-b"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay-b shown offline", func() bool { return !onlineIn(c.nodes["server"], c.id("relay-b")) })
	e := filesAt(t, c, "server", b1, true)[c.id("b1").String()]
	if e.State != node.FilesFailed || !strings.Contains(e.Error, c.id("relay-b").String()) || !strings.Contains(e.Error, "not connected") {
		t.Errorf("fetch through a relay that is down: %+v", e)
	}
	c.start("relay-b")
	eventually(t, "b1 back under relay-b", func() bool { return onlineIn(c.nodes["server"], c.id("b1")) })
	if e := filesAt(t, c, "server", b1, true)[c.id("b1").String()]; e.State != node.FilesCollected {
		t.Errorf("fetched again through relay-b: %+v", e)
	}
	// Now from b1 itself, which is down.
	dropBlocks(t, c, "server", root)
	dropBlocks(t, c, "relay-b", root)
	if err := c.nodes["b1"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b1 shown offline", func() bool { return !onlineIn(c.nodes["relay-b"], c.id("b1")) })
	e = filesAt(t, c, "server", b1, true)[c.id("b1").String()]
	if e.State != node.FilesFailed || !strings.Contains(e.Error, c.id("b1").String()+", which collected the files, is not connected") {
		t.Errorf("fetch from a client that is down: %+v", e)
	}
	if _, err := c.nodes["server"].JobFiles(ctx, none, false); err != nil {
		t.Errorf("job files of a job with nothing collected: %v", err)
	}
}
