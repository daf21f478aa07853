package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/node"
)

// mountSmall mounts a tmpfs of size bytes on dir (a real full disk, not a
// fake: it needs root, as CI runs, and the test is skipped otherwise).
func mountSmall(t *testing.T, dir string, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as a full disk")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// TestFullDisk: a client whose block store fills up mid-fetch fails with
// an error that says so, and a package unpacked onto a full disk leaves no
// target directory behind, never a half-written one.
func TestFullDisk(t *testing.T) {
	c := newCluster(t)
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	ctx := context.Background()
	if _, err := node.Join(ctx, c.home("a1"), node.JoinOptions{Token: c.token("relay-a", "relay-a", cert.RoleClient, "a"), Listen: loopback}); err != nil {
		t.Fatal(err)
	}
	mountSmall(t, c.home("a1").Blocks(), "1m")
	c.start("a1")
	eventually(t, "a1 online", func() bool { return onlineIn(c.nodes["server"], c.id("a1")) })

	p := randomPackage(t, c, "server", 4<<20, 31)
	_, err := c.nodes["a1"].FetchPackage(ctx, p.CID)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("fetching 4 MiB into a 1 MiB block store: %v; want an error saying the disk is full", err)
	}

	// Unpacking onto a full disk: the package is whole on the server; the
	// target is a 1 MiB tmpfs.
	bs, err := blocks.Open(filepath.Join(t.TempDir(), "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	src := t.TempDir()
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7919 >> 3)
	}
	if err := os.WriteFile(filepath.Join(src, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := pkg.Build(ctx, src, "big", "1", bs, pkg.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := res.Root
	disk := filepath.Join(t.TempDir(), "disk")
	mountSmall(t, disk, "1m")
	target := filepath.Join(disk, "out")
	err = pkg.Unpack(ctx, bs, root, target)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("unpacking 3 MiB onto a 1 MiB disk: %v; want an error saying the disk is full", err)
	}
	entries, _ := os.ReadDir(disk)
	if len(entries) != 0 {
		t.Errorf("the full disk holds %v after the failed unpack; want nothing", entries)
	}
}
