package node_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swdist/swdist/hierarchy/cert"
)

// blockFiles counts the blocks in a node's block store on disk.
func blockFiles(t *testing.T, dir string) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(dir, "blocks"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".data") {
			n++
		}
		return nil
	})
	return n
}

// TestResume: a fetch interrupted halfway resumes from the blocks already
// held: the relay sends again at most the blocks that were on the wire
// when it stopped (one or two per request in flight), not the package.
func TestResume(t *testing.T) {
	c := newCluster(t)
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	c.join("a1", "relay-a", cert.RoleClient, "a")
	eventually(t, "a1 online", func() bool { return onlineIn(c.nodes["server"], c.id("a1")) })
	ctx := context.Background()
	p := randomPackage(t, c, "server", 32<<20, 41)
	if _, err := c.nodes["relay-a"].FetchPackage(ctx, p.CID); err != nil {
		t.Fatal(err)
	}
	total := p.Chunks + 1

	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := c.nodes["a1"].FetchPackage(fctx, p.CID); done <- err }()
	deadline := time.Now().Add(time.Minute)
	for blockFiles(t, c.home("a1").Dir) < total/2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Skip("the fetch finished before it could be interrupted")
	}
	held := blockFiles(t, c.home("a1").Dir)
	sent := c.nodes["relay-a"].BlocksServed()[c.id("a1")]
	t.Logf("interrupted with %d of %d blocks held, %d sent", held, total, sent)

	got, err := c.nodes["a1"].FetchPackage(ctx, p.CID)
	if err != nil || !got.Held {
		t.Fatalf("resume: %+v, %v", got, err)
	}
	again := c.nodes["relay-a"].BlocksServed()[c.id("a1")] - total
	t.Logf("blocks sent twice: %d", again)
	if again > 16 {
		t.Errorf("the relay sent %d blocks twice; want at most those in flight when the fetch stopped", again)
	}
}
