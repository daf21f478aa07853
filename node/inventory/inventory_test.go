package inventory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
)

func sample() Inventory {
	var inv Inventory
	inv.Set("hostname", "till-1")
	inv.Set("os.version", "12.11")
	inv.Set("memory.total", "8589934592")
	inv.Set("custom.owner", "shop 12")
	inv.Add("software", Item{"name": "openssl", "version": "3.0.1", "arch": "amd64", "source": "dpkg"})
	inv.Add("software", Item{"name": "bash", "version": "5.2", "arch": "amd64", "source": "dpkg"})
	inv.Add("disk", Item{"mount": "/", "size": "100", "free": "40"})
	return inv
}

func TestDiffApply(t *testing.T) {
	old := sample()
	tests := []struct {
		name    string
		change  func(*Inventory)
		changes int
	}{
		{"unchanged", func(*Inventory) {}, 0},
		{"field changed", func(i *Inventory) { i.Set("os.version", "12.12") }, 1},
		{"field removed", func(i *Inventory) { delete(i.Fields, "custom.owner") }, 1},
		{"software upgraded", func(i *Inventory) {
			delete(i.Items["software"], Kinds["software"].KeyOf(Item{"name": "openssl", "version": "3.0.1", "arch": "amd64", "source": "dpkg"}))
			i.Add("software", Item{"name": "openssl", "version": "3.0.2", "arch": "amd64", "source": "dpkg"})
		}, 2},
		{"disk filled", func(i *Inventory) { i.Add("disk", Item{"mount": "/", "size": "100", "free": "10"}) }, 1},
		{"kind emptied", func(i *Inventory) { delete(i.Items, "disk") }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := old.Clone()
			tt.change(&cur)
			d := Diff(old, cur, 2)
			if d.Changes() != tt.changes {
				t.Errorf("%d changes, want %d: %+v", d.Changes(), tt.changes, d)
			}
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			got := old.Clone()
			got.Apply(d)
			for kind, its := range got.Items {
				if len(its) == 0 {
					delete(got.Items, kind) // an emptied kind is the same as none
				}
			}
			if diff := cmp.Diff(cur, got); diff != "" {
				t.Errorf("old + delta != new (-want +got):\n%s", diff)
			}
			if !SameDigest(got.Digest(), d.Digest) {
				t.Error("digest after applying differs from the delta's")
			}
		})
	}
}

func TestCodecRoundTrip(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	d := FullDelta(sample(), 1)
	body, err := c.Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(d, got); diff != "" {
		t.Error(diff)
	}
}

func TestCodecRefuses(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	raw := func(d Delta) []byte {
		b, err := encMode.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return enc.EncodeAll(b, nil)
	}
	good := FullDelta(sample(), 1)
	with := func(f func(*Delta)) []byte {
		d := FullDelta(sample(), 1)
		f(&d)
		return raw(d)
	}
	many := map[string]string{}
	for i := range MaxFields + 1 {
		many[fmt.Sprintf("custom.k%d", i)] = "v"
	}
	bomb := enc.EncodeAll(make([]byte, MaxDecoded+1), nil) // 8 MiB of zeros, a few hundred bytes compressed
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"not zstd", []byte("hello"), ErrMalformed},
		{"not cbor", enc.EncodeAll([]byte{0xff, 0x00}, nil), ErrMalformed},
		{"too big on the wire", make([]byte, MaxBody+1), ErrOversized},
		{"decompression bomb", bomb, ErrOversized},
		{"too many fields", with(func(d *Delta) { d.Set = many }), ErrTooMany},
		{"bad field name", with(func(d *Delta) { d.Set["Bad Name"] = "x" }), ErrBadName},
		{"field named like a kind", with(func(d *Delta) { d.Set["software.name"] = "x" }), ErrBadName},
		{"value too long", with(func(d *Delta) { d.Set["custom.x"] = strings.Repeat("a", MaxValueLen+1) }), ErrBadValue},
		{"not utf-8", with(func(d *Delta) { d.Set["custom.x"] = "\xff\xfe" }), ErrMalformed}, // CBOR text must be UTF-8
		{"unknown kind", with(func(d *Delta) { d.Add["printer"] = []Item{{"name": "x"}} }), ErrBadName},
		{"unknown attribute", with(func(d *Delta) { d.Add["software"] = []Item{{"name": "x", "colour": "red"}} }), ErrBadName},
		{"item without key", with(func(d *Delta) { d.Add["disk"] = []Item{{"free": "1"}} }), ErrBadValue},
		{"delta without base", with(func(d *Delta) { d.Full = false }), ErrMalformed},
		{"short digest", with(func(d *Delta) { d.Digest = d.Digest[:4] }), ErrMalformed},
	}
	if _, err := c.Decode(raw(good)); err != nil {
		t.Fatalf("good report refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Decode(tt.body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if Reason(err) != tt.want.Error() {
				t.Errorf("reason %q", Reason(err))
			}
		})
	}
}

func TestParseCond(t *testing.T) {
	tests := []struct {
		cond  string
		value string
		has   bool
		want  bool
	}{
		{"os.version=12", "12", true, true},
		{"os.version=12", "11", true, false},
		{"os.version!=12", "11", true, true},
		{"os.version!=12", "", false, true},
		{"os.version=12", "", false, false},
		{"software.name~^lib.*ssl", "libssl3", true, true},
		{"software.name~^lib.*ssl", "openssl", true, false},
		{"disk.free<10G", "1073741824", true, true},
		{"disk.free<10G", "21474836480", true, false},
		{"disk.free<10GB", "9999999999", true, true},
		{"disk.free<10GB", "10000000000", true, false},
		{"cpu.count>=4", "4", true, true},
		{"cpu.count>4", "4", true, false},
		{"memory.total=8GiB", "8589934592", true, true},
		{"cpu.count<=2", "two", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.cond+"/"+tt.value, func(t *testing.T) {
			c, err := ParseCond(tt.cond)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Match(tt.value, tt.has); got != tt.want {
				t.Errorf("Match(%q) = %v", tt.value, got)
			}
		})
	}
	for _, bad := range []string{"os.version", "=12", "disk.free<lots", "software.name~(", "a^b"} {
		if _, err := ParseCond(bad); err == nil {
			t.Errorf("ParseCond(%q) accepted", bad)
		}
	}
}

func TestCloseNames(t *testing.T) {
	known := []string{"os.version", "os.name", "software.version", "software.name", "hostname", "custom.owner"}
	tests := []struct {
		name string
		want []string
	}{
		{"os.verison", []string{"os.version"}},
		{"hostnme", []string{"hostname"}},
		{"version", []string{"os.version", "software.version"}},
		{"owner", []string{"custom.owner"}},
		{"zzzzzz", nil},
	}
	for _, tt := range tests {
		if got := CloseNames(tt.name, known, 5); !cmp.Equal(got, tt.want) {
			t.Errorf("CloseNames(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

type fakeCollector struct {
	name string
	f    func(ctx context.Context, inv *Inventory) error
}

func (f fakeCollector) Name() string                                      { return f.name }
func (f fakeCollector) Collect(ctx context.Context, inv *Inventory) error { return f.f(ctx, inv) }

func TestCollectSurvivesBadCollectors(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	inv := Collect(context.Background(), []Collector{
		fakeCollector{"good", func(_ context.Context, inv *Inventory) error { inv.Set("hostname", "h"); return nil }},
		// Ignores its context, as a stat on a hung NFS mount does.
		fakeCollector{"hung", func(_ context.Context, inv *Inventory) error { <-block; return nil }},
		fakeCollector{"broken", func(_ context.Context, inv *Inventory) error {
			inv.Set("os.name", "partial")
			return errors.New("dpkg-query: not found")
		}},
	}, 200*time.Millisecond, Inventory{})
	want := map[string]string{"hostname": "h", "os.name": "partial", "error.hung": "timed out after 200ms", "error.broken": "dpkg-query: not found"}
	if diff := cmp.Diff(want, inv.Fields); diff != "" {
		t.Error(diff)
	}
}

func TestCustomFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-asset.conf", "# asset data\nasset-tag = A-1\nowner = \"Jane\"\n")
	write("20-override.conf", "owner = Bob\nBad Key = x\nno equals sign\n")
	write(".hidden", "secret = 1\n")
	var inv Inventory
	err := Custom{Dir: dir}.Collect(context.Background(), &inv)
	if err == nil || !strings.Contains(err.Error(), "20-override.conf line 2") || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("error %v, want the bad lines named", err)
	}
	want := map[string]string{"custom.asset-tag": "A-1", "custom.owner": "Bob"}
	if diff := cmp.Diff(want, inv.Fields); diff != "" {
		t.Error(diff)
	}
}

// TestSystemCollector runs the real collectors on this machine: they must
// find at least the basics.
func TestSystemCollector(t *testing.T) {
	inv := Collect(context.Background(), []Collector{System{Identity: Identity{Role: "client", Site: "a", Version: "test"}}, Disks{}, Packages{}}, 30*time.Second, Inventory{})
	for _, f := range []string{"hostname", "os.kind", "cpu.count", "memory.total", "site"} {
		if inv.Fields[f] == "" {
			t.Errorf("no %s in %v", f, inv.Fields)
		}
	}
	if len(inv.Items["disk"]) == 0 {
		t.Error("no disk found")
	}
	if err := FullDelta(inv, 1).Validate(); err != nil {
		t.Errorf("this machine's own inventory does not validate: %v", err)
	}
	t.Logf("%d fields, %d packages, %d disks, %d interfaces", len(inv.Fields), len(inv.Items["software"]), len(inv.Items["disk"]), len(inv.Items["net"]))
}
