package inventory

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/shirou/gopsutil/v4/disk"
)

// fakeTools puts shell scripts named like the package managers in a fresh
// directory and makes it the whole PATH. The scripts are run for real by
// the real Packages collector; only what they print is made up. With
// scripts nil, PATH is a directory that does not exist: no tools at all.
func fakeTools(t *testing.T, scripts map[string]string) {
	if scripts == nil {
		t.Setenv("PATH", "/nonexistent")
		return
	}
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

const dpkgList = `printf 'ii \tbash\t5.2\tamd64\n'
printf 'rc \told-thing\t1.0\tamd64\n'
printf 'ii \topenssl\t3.0.2\tamd64\n'`

// TestPackages runs the real Packages collector on a PATH without package
// managers (real: nothing is faked) and on one with fake dpkg-query and rpm
// scripts that list, fail or hang.
func TestPackages(t *testing.T) {
	tests := []struct {
		name    string
		scripts map[string]string // nil: PATH=/nonexistent
		want    []string          // software keys
		err     string            // "" no error
	}{
		{"neither dpkg nor rpm (real)", nil, nil, "no package manager found: dpkg-query and rpm are not on PATH"},
		{"dpkg lists", map[string]string{"dpkg-query": dpkgList}, []string{"dpkg|bash|amd64|5.2", "dpkg|openssl|amd64|3.0.2"}, ""},
		{"dpkg fails", map[string]string{"dpkg-query": "echo 'dpkg-query: database locked' >&2; exit 2"}, nil,
			"dpkg-query: exit status 2: dpkg-query: database locked"},
		{"rpm only", map[string]string{"rpm": `printf 'ii \tzlib\t1.2-3\tx86_64\n'`}, []string{"rpm|zlib|x86_64|1.2-3"}, ""},
		{"dpkg lists, rpm fails", map[string]string{"dpkg-query": dpkgList, "rpm": "exit 1"},
			[]string{"dpkg|bash|amd64|5.2", "dpkg|openssl|amd64|3.0.2"}, "rpm: exit status 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeTools(t, tt.scripts)
			var inv Inventory
			err := Packages{}.Collect(context.Background(), &inv)
			if got := errString(err); got != tt.err {
				t.Errorf("error %q, want %q", got, tt.err)
			}
			if got := slices.Sorted(maps.Keys(inv.Items["software"])); !cmp.Equal(got, tt.want) {
				t.Errorf("software %v, want %v", got, tt.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ownerCollector is a fake collector that owns the fields under its
// prefix, for what no real collector can be made to do (hang in Go code,
// fail halfway).
type ownerCollector struct {
	fakeCollector
	prefix string
}

func (o ownerCollector) OwnsField(f string) bool    { return strings.HasPrefix(f, o.prefix) }
func (o ownerCollector) OwnsItem(string, Item) bool { return false }

// setAll sets the fields given as name, value, name, value...
func setAll(kv ...string) func(*Inventory) {
	return func(inv *Inventory) {
		for i := 0; i+1 < len(kv); i += 2 {
			inv.Set(kv[i], kv[i+1])
		}
	}
}

// ok is a collector function that sets and succeeds.
func ok(set func(*Inventory)) func(context.Context, *Inventory) error {
	return func(_ context.Context, inv *Inventory) error { set(inv); return nil }
}

// TestCollectKeepsLastOnFailure: a collector that fails, hangs or whose
// tool is missing keeps its part of the last inventory, with error.NAME;
// one that succeeds replaces its part, removals included.
func TestCollectKeepsLastOnFailure(t *testing.T) {
	var last Inventory
	last.Set("hostname", "till-1")
	last.Set("app.colour", "red")
	last.Set("app.size", "3")
	last.Add("software", Item{"name": "bash", "version": "5.1", "arch": "amd64", "source": "dpkg"})
	last.Add("software", Item{"name": "zsh", "version": "5.9", "arch": "amd64", "source": "dpkg"})
	last.Add("software", Item{"name": "hello", "version": "1.0", "source": "swdist", "cid": "bafy", "installed_at": "2025-01-01T00:00:00Z"})
	lastPackages := []string{"dpkg|bash|amd64|5.1", "dpkg|zsh|amd64|5.9", "swdist|hello||1.0"}
	block := make(chan struct{})
	defer close(block)
	hostname := fakeCollector{"host", ok(setAll("hostname", "till-1"))}
	swdist := Swdist{List: func(context.Context) ([]Installed, error) {
		return []Installed{{Name: "hello", Version: "1.0", CID: "bafy", At: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}, nil
	}}
	tests := []struct {
		name       string
		scripts    map[string]string // the PATH for Packages; nil: /nonexistent
		app        Collector
		fields     map[string]string
		software   []string
		unchanged  bool // the delta from last carries only the error field
		noRemovals bool
	}{
		{"dpkg missing (real, PATH=/nonexistent)", nil,
			ownerCollector{fakeCollector{"app", ok(setAll("app.colour", "red", "app.size", "3"))}, "app."},
			map[string]string{"hostname": "till-1", "app.colour": "red", "app.size": "3", "error.packages": ErrNoPackageManager.Error()},
			lastPackages, true, true},
		{"dpkg fails (fake dpkg-query exits 2)", map[string]string{"dpkg-query": "exit 2"},
			ownerCollector{fakeCollector{"app", ok(setAll("app.colour", "red", "app.size", "3"))}, "app."},
			map[string]string{"hostname": "till-1", "app.colour": "red", "app.size": "3", "error.packages": "dpkg-query: exit status 2"},
			lastPackages, true, true},
		{"dpkg hangs (fake dpkg-query sleeps)", map[string]string{"dpkg-query": "exec /bin/sleep 10"},
			ownerCollector{fakeCollector{"app", ok(setAll("app.colour", "red", "app.size", "3"))}, "app."},
			map[string]string{"hostname": "till-1", "app.colour": "red", "app.size": "3", "error.packages": "timed out after 300ms"},
			lastPackages, true, true},
		{"dpkg works again: its removals go up", map[string]string{"dpkg-query": `printf 'ii \tbash\t5.2\tamd64\n'`},
			ownerCollector{fakeCollector{"app", ok(setAll("app.colour", "red", "app.size", "3"))}, "app."},
			map[string]string{"hostname": "till-1", "app.colour": "red", "app.size": "3"},
			[]string{"dpkg|bash|amd64|5.2", "swdist|hello||1.0"}, false, false},
		{"fake collector hangs", map[string]string{"dpkg-query": `printf 'ii \tbash\t5.1\tamd64\nii \tzsh\t5.9\tamd64\n'`},
			ownerCollector{fakeCollector{"app", func(context.Context, *Inventory) error { <-block; return nil }}, "app."},
			map[string]string{"hostname": "till-1", "app.colour": "red", "app.size": "3", "error.app": "timed out after 300ms"},
			lastPackages, true, true},
		{"fake collector fails halfway: what it got is updated, nothing removed", map[string]string{"dpkg-query": `printf 'ii \tbash\t5.1\tamd64\nii \tzsh\t5.9\tamd64\n'`},
			ownerCollector{fakeCollector{"app", func(_ context.Context, inv *Inventory) error {
				inv.Set("app.colour", "blue")
				return errors.New("app.size: unreadable")
			}}, "app."},
			map[string]string{"hostname": "till-1", "app.colour": "blue", "app.size": "3", "error.app": "app.size: unreadable"},
			lastPackages, false, true},
		{"a collector that is no Owner loses its part when it fails", map[string]string{"dpkg-query": `printf 'ii \tbash\t5.1\tamd64\nii \tzsh\t5.9\tamd64\n'`},
			fakeCollector{"app", func(context.Context, *Inventory) error { return errors.New("broken") }},
			map[string]string{"hostname": "till-1", "error.app": "broken"},
			lastPackages, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeTools(t, tt.scripts)
			inv := Collect(context.Background(), []Collector{hostname, Packages{}, swdist, tt.app}, 300*time.Millisecond, last.Clone())
			if diff := cmp.Diff(tt.fields, inv.Fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			if got := slices.Sorted(maps.Keys(inv.Items["software"])); !cmp.Equal(got, tt.software) {
				t.Errorf("software %v, want %v", got, tt.software)
			}
			d := Diff(last, inv, 2)
			if tt.noRemovals && (len(d.Del) != 0 || len(d.Unset) != 0) {
				t.Errorf("the delta removes %v %v", d.Del, d.Unset)
			}
			if tt.unchanged && (d.Changes() != 1 || len(d.Set) != 1) {
				t.Errorf("the delta carries more than the error field: %+v", d)
			}
		})
	}
}

// hungMounts is a fake stat: the mounts in it block until released (a
// hung NFS mount cannot be made here without root and a server).
type hungMounts struct {
	mu      sync.Mutex
	hung    map[string]chan struct{}
	size    uint64
	mounted []string
}

func (h *hungMounts) partitions(context.Context, bool) ([]disk.PartitionStat, error) {
	var out []disk.PartitionStat
	for _, m := range h.mounted {
		out = append(out, disk.PartitionStat{Mountpoint: m, Device: "dev" + m, Fstype: "ext4"})
	}
	out = append(out, disk.PartitionStat{Mountpoint: "/proc", Fstype: "proc"})
	return out, nil
}

func (h *hungMounts) usage(_ context.Context, path string) (*disk.UsageStat, error) {
	h.mu.Lock()
	c, size := h.hung[path], h.size
	h.mu.Unlock()
	if c != nil {
		<-c // ignores its context, as a stat on a hung mount does
	}
	if path == "/forbidden" {
		return nil, os.ErrPermission
	}
	return &disk.UsageStat{Path: path, Total: size, Free: size / 2, UsedPercent: 50}, nil
}

func (h *hungMounts) release(path string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.hung[path])
	delete(h.hung, path)
}

// TestDisksHungMount: a mount whose stat hangs costs only its own disk
// item, kept at its last value, and error.disks; the real System collector
// beside it reports as usual. The stat is not started again while the
// first hangs, and once it returns the next collection is whole.
func TestDisksHungMount(t *testing.T) {
	h := &hungMounts{hung: map[string]chan struct{}{"/mnt/nfs-test": make(chan struct{})}, size: 200,
		mounted: []string{"/", "/mnt/nfs-test", "/forbidden"}}
	defer func() {
		if h.hung["/mnt/nfs-test"] != nil {
			h.release("/mnt/nfs-test")
		}
	}()
	var last Inventory
	last.Set("hostname", "old-name")
	last.Add("disk", Item{"mount": "/", "device": "dev/", "fstype": "ext4", "size": "100", "free": "50", "used_percent": "50"})
	last.Add("disk", Item{"mount": "/mnt/nfs-test", "device": "dev/mnt/nfs-test", "fstype": "ext4", "size": "100", "free": "50", "used_percent": "50"})
	collectors := []Collector{System{Identity: Identity{Role: "client", Site: "a", Version: "test"}},
		Disks{MountTimeout: 200 * time.Millisecond, partitions: h.partitions, usage: h.usage}}
	tests := []struct {
		name    string
		before  func()
		sizes   map[string]string // mount → size
		err     string            // in error.disks; "" none
		maxTook time.Duration
	}{
		{"mount hangs", func() {}, map[string]string{"/": "200", "/mnt/nfs-test": "100"},
			"/mnt/nfs-test: no answer to a stat within 200ms (a hung mount?)", 2 * time.Second},
		{"still hung: not statted again", func() {}, map[string]string{"/": "200", "/mnt/nfs-test": "100"},
			"/mnt/nfs-test: no answer yet to a stat started by an earlier collection", 150 * time.Millisecond},
		{"mount answers again", func() {
			h.release("/mnt/nfs-test")
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if _, busy := statting.Load("/mnt/nfs-test"); !busy {
					break
				}
			}
		}, map[string]string{"/": "200", "/mnt/nfs-test": "200"}, "", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.before()
			start := time.Now()
			inv := Collect(context.Background(), collectors, 5*time.Second, last)
			if took := time.Since(start); took > tt.maxTook {
				t.Errorf("took %s", took)
			}
			if inv.Fields["hostname"] == "" || inv.Fields["hostname"] == "old-name" || inv.Fields["memory.total"] == "" || inv.Fields["error.system"] != "" {
				t.Errorf("the system part suffered: hostname %q, memory.total %q, error.system %q",
					inv.Fields["hostname"], inv.Fields["memory.total"], inv.Fields["error.system"])
			}
			sizes := map[string]string{}
			for _, it := range inv.Items["disk"] {
				sizes[it["mount"]] = it["size"]
			}
			if diff := cmp.Diff(tt.sizes, sizes); diff != "" {
				t.Errorf("disk sizes (-want +got):\n%s", diff)
			}
			if got := inv.Fields["error.disks"]; (tt.err == "") != (got == "") || !strings.Contains(got, tt.err) {
				t.Errorf("error.disks %q, want %q", got, tt.err)
			}
			if d := Diff(last, inv, 2); len(d.Del["disk"]) != 0 {
				t.Errorf("the delta removes disks %v", d.Del["disk"])
			}
		})
	}
}

// TestDisksCollectorHangs: if listing the mounts itself hangs, the whole
// disks collector times out: the disk items are kept and the rest goes up.
func TestDisksCollectorHangs(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	var last Inventory
	last.Add("disk", Item{"mount": "/", "size": "100", "free": "50"})
	inv := Collect(context.Background(), []Collector{
		fakeCollector{"host", ok(setAll("hostname", "h"))},
		Disks{partitions: func(context.Context, bool) ([]disk.PartitionStat, error) { <-block; return nil, nil }},
	}, 200*time.Millisecond, last)
	want := map[string]string{"hostname": "h", "error.disks": "timed out after 200ms"}
	if diff := cmp.Diff(want, inv.Fields); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff(last.Items, inv.Items); diff != "" {
		t.Errorf("disks not kept (-want +got):\n%s", diff)
	}
}
