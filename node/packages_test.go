package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/node/api"
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
	for _, name := range []string{"a1", "a2"} {
		got, err := c.nodes[name].FetchPackage(ctx, p.CID)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Held || got.Name != "app" || got.Chunks != p.Chunks {
			t.Errorf("%s: %+v", name, got)
		}
	}
	served := c.nodes["server"].BlocksServed()
	if len(served) != 1 || served[c.id("relay-a")] != p.Chunks+1 {
		t.Errorf("the server served %v; want each of the %d blocks once, to relay-a", served, p.Chunks+1)
	}
	if n := c.nodes["relay-a"].BlocksServed(); n[c.id("a1")] != p.Chunks+1 || n[c.id("a2")] != p.Chunks+1 {
		t.Errorf("relay-a served %v", n)
	}
	if _, err := c.nodes["b1"].FetchPackage(ctx, "bafkreig6j5e4uiloae7hvjw5ifoqnlfbbqyg4kcp7gtx33odcsycbl4xrq"); err == nil {
		t.Error("fetching a package nobody has succeeded")
	}
}
