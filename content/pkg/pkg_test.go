package pkg

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/swdist/swdist/content/blocks"
)

func openStore(t testing.TB) *blocks.Store {
	t.Helper()
	s, err := blocks.Open(filepath.Join(t.TempDir(), "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tree writes files (path → content; a content starting with "->" is a
// symlink) under a new directory, in the given order.
func tree(t testing.TB, files [][2]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f[0]))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(f[1], "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(f[0], ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(f[1]), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var sample = [][2]string{
	{"bin/run.sh", "#!/bin/sh\necho hi\n"},
	{"etc/app.conf", strings.Repeat("key = value\n", 1000)},
	{"lib/current", "->../etc/app.conf"},
	{"share/doc/README", "read me"},
}

// snapshot describes a tree: each path's kind, mode and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, _ := d.Info()
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link " + l
		case info.IsDir():
			out[rel] = "dir " + info.Mode().Perm().String()
		default:
			b, _ := os.ReadFile(p)
			out[rel] = info.Mode().Perm().String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeterministicAndRoundTrip(t *testing.T) {
	ctx := context.Background()
	a := tree(t, sample)
	// The same files made in another order, at another time.
	rev := append([][2]string(nil), sample...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	b := tree(t, rev)
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(b, "etc/app.conf"), old, old); err != nil {
		t.Fatal(err)
	}
	s1, s2 := openStore(t), openStore(t)
	r1, err := Build(ctx, a, "app", "1.0", s1, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Build(ctx, b, "app", "1.0", s2, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r1.Root.Equals(r2.Root) {
		t.Errorf("the same tree built twice: %s and %s", r1.Root, r2.Root)
	}
	if r1.Stored >= r1.Size {
		t.Errorf("text stored in %d bytes of %d: not compressed", r1.Stored, r1.Size)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := Unpack(ctx, s2, r1.Root, out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snapshot(t, a), snapshot(t, out)); diff != "" {
		t.Errorf("unpacked tree differs (-built +unpacked):\n%s", diff)
	}
	if err := Unpack(ctx, s2, r1.Root, out); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("unpack over an existing directory: %v", err)
	}
}

func TestIncompressibleStoredRaw(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.Read(data)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	res, err := Build(context.Background(), dir, "blob", "1", s, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReadRoot(context.Background(), s, res.Root)
	if err != nil {
		t.Fatal(err)
	}
	raw := 0
	for _, c := range r.Chunks {
		if !c.Zstd {
			raw++
		}
	}
	if raw < len(r.Chunks)-1 || len(r.Chunks) < 2 {
		t.Errorf("%d of %d chunks of random bytes stored raw", raw, len(r.Chunks))
	}
}

// TestSmallChangeMovesFewChunks: changing 1 % of a large file's bytes in
// one place changes only the chunks around it.
func TestSmallChangeMovesFewChunks(t *testing.T) {
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(1, 2))
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	build := func(d []byte) Root {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "big"), d, 0o644); err != nil {
			t.Fatal(err)
		}
		s := openStore(t)
		res, err := Build(ctx, dir, "big", "1", s, BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := ReadRoot(ctx, s, res.Root)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	v1 := build(data)
	v2data := append([]byte(nil), data...)
	at := len(data) / 3
	for i := at; i < at+len(data)/100; i++ {
		v2data[i] ^= 0xff
	}
	v2 := build(v2data)
	had := map[string]bool{}
	for _, c := range v1.CIDs() {
		had[c.KeyString()] = true
	}
	var moved uint64
	for i, c := range v2.CIDs() {
		if !had[c.KeyString()] {
			moved += uint64(v2.Chunks[i].Stored)
		}
	}
	ratio := float64(moved) / float64(v2.Stored)
	t.Logf("1%% changed: %d of %d chunks new, %.1f%% of the bytes move", countNew(v1, v2), len(v2.Chunks), 100*ratio)
	if ratio > 0.03 {
		t.Errorf("%.1f%% of the package moves for a 1%% change, want at most 3%%", 100*ratio)
	}
}

func countNew(v1, v2 Root) int {
	had := map[string]bool{}
	for _, c := range v1.CIDs() {
		had[c.KeyString()] = true
	}
	n := 0
	for _, c := range v2.CIDs() {
		if !had[c.KeyString()] {
			n++
		}
	}
	return n
}

// TestCorruptBlock: a chunk damaged on disk fails the unpack, naming it,
// and nothing is left at the target.
func TestCorruptBlock(t *testing.T) {
	ctx := context.Background()
	storeDir := filepath.Join(t.TempDir(), "blocks")
	s, err := blocks.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := Build(ctx, tree(t, sample), "app", "1", s, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := ReadRoot(ctx, s, res.Root)
	bad := r.ChunkCID(0)
	// Overwrite the block's file in flatfs with other bytes.
	var found bool
	filepath.WalkDir(storeDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".data") {
			if b, _ := os.ReadFile(p); len(b) == int(r.Chunks[0].Stored) {
				os.WriteFile(p, bytes.Repeat([]byte("x"), len(b)), 0o644)
				found = true
			}
		}
		return nil
	})
	if !found {
		t.Fatal("the chunk's file was not found in the store")
	}
	out := filepath.Join(t.TempDir(), "out")
	err = Unpack(ctx, s, res.Root, out)
	if !errors.Is(err, blocks.ErrCorrupt) || !strings.Contains(err.Error(), bad.String()) {
		t.Errorf("unpack with a corrupt chunk: %v", err)
	}
	if _, serr := os.Lstat(out); serr == nil {
		t.Error("a partial tree was left at the target")
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 0 {
		t.Errorf("left beside the target: %v", entries)
	}
}

// tarOf writes headers (with a body for regular files) as a tar stream.
func tarOf(t testing.TB, hs ...*tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hs {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = 2
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && h.Size <= 1<<20 { // a larger one only claims its size
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	return b.Bytes()
}

func TestExtractRefusesUnsafeEntries(t *testing.T) {
	reg := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	dir := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755} }
	link := func(name, to string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: to, Mode: 0o777}
	}
	cases := map[string][]*tar.Header{
		"dot-dot":                 {reg("../x")},
		"dot-dot inside":          {dir("a/"), reg("a/../../x")},
		"absolute":                {reg("/etc/x")},
		"symlink out":             {link("l", "../../etc")},
		"absolute symlink":        {link("l", "/etc")},
		"file under a symlink":    {dir("a/"), link("a/l", "."), reg("a/l/x")},
		"file under a file":       {reg("f"), reg("f/x")},
		"missing parent":          {reg("a/x")},
		"duplicate":               {reg("x"), reg("x")},
		"device":                  {{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		"hard link":               {reg("x"), {Name: "y", Typeflag: tar.TypeLink, Linkname: "x"}},
		"backslash":               {reg(`a\..\..\x`)},
		"not clean":               {dir("a/"), reg("a//x")},
		"symlink then traverse":   {link("up", ".."), reg("up/x")},
		"larger than the archive": {{Name: "big", Typeflag: tar.TypeReg, Size: 1 << 30}},
	}
	for name, hs := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			target := filepath.Join(root, "target")
			os.Mkdir(target, 0o755)
			data := tarOf(t, hs...)
			err := Extract(bytes.NewReader(data), target, int64(len(data)))
			if !errors.Is(err, ErrUnsafe) {
				t.Errorf("extract: %v, want ErrUnsafe", err)
			}
			entries, _ := os.ReadDir(root)
			if len(entries) != 1 {
				t.Errorf("written outside the target: %v", entries)
			}
		})
	}
}

func TestDecodeRootRefusesAbsurd(t *testing.T) {
	c, _ := blocks.CID(blocks.Raw, []byte("x"))
	good := Root{V: 1, Name: "a", Version: "1", Size: 10, Stored: 5, Chunks: []Chunk{{CID: c.Bytes(), Raw: 10, Stored: 5, Zstd: true}}}
	if b, _, _ := good.Encode(); true {
		if _, err := DecodeRoot(b); err != nil {
			t.Fatalf("good root refused: %v", err)
		}
	}
	root, _ := blocks.CID(blocks.DagCBOR, []byte("x"))
	cases := map[string]func(*Root){
		"huge chunk":        func(r *Root) { r.Chunks[0].Raw, r.Size = math.MaxUint32, math.MaxUint32 },
		"sizes do not add":  func(r *Root) { r.Size = 1 << 40 },
		"stored grows":      func(r *Root) { r.Chunks[0].Stored, r.Stored = 20, 20 },
		"raw but shrunk":    func(r *Root) { r.Chunks[0].Zstd = false },
		"not a raw CID":     func(r *Root) { r.Chunks[0].CID = root.Bytes() },
		"garbage CID":       func(r *Root) { r.Chunks[0].CID = []byte{1, 2, 3} },
		"no name":           func(r *Root) { r.Name = "" },
		"future format":     func(r *Root) { r.V = 2 },
		"empty chunk":       func(r *Root) { r.Chunks[0].Raw, r.Chunks[0].Stored, r.Size, r.Stored = 0, 0, 0, 0 },
		"long version name": func(r *Root) { r.Version = strings.Repeat("v", 200) },
	}
	for name, mutate := range cases {
		r := good
		r.Chunks = append([]Chunk(nil), good.Chunks...)
		mutate(&r)
		b, _, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRoot(b); !errors.Is(err, ErrBadRoot) {
			t.Errorf("%s: %v, want ErrBadRoot", name, err)
		}
	}
	if _, err := DecodeRoot([]byte{0xa6, 0x00, 0x01, 0x09, 0x02}); !errors.Is(err, ErrBadRoot) {
		t.Errorf("unknown field or garbage: %v", err)
	}
}

func FuzzDecodeRoot(f *testing.F) {
	c, _ := blocks.CID(blocks.Raw, []byte("x"))
	b, _, _ := Root{V: 1, Name: "a", Version: "1", Size: 10, Stored: 5, Chunks: []Chunk{{CID: c.Bytes(), Raw: 10, Stored: 5, Zstd: true}}}.Encode()
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRoot(data)
		if err != nil {
			return
		}
		var size uint64
		for i := range r.Chunks {
			size += uint64(r.Chunks[i].Raw)
			_ = r.ChunkCID(i)
		}
		if size != r.Size {
			t.Fatalf("accepted a root whose sizes do not add up")
		}
	})
}

// FuzzExtract: whatever the archive, nothing is written outside the target
// and nothing panics.
func FuzzExtract(f *testing.F) {
	f.Add(tarOf(f, &tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}, &tar.Header{Name: "a/x", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(f, &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../x"}))
	f.Add(tarOf(f, &tar.Header{Name: "../x", Typeflag: tar.TypeReg}))
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		root, err := os.MkdirTemp(base, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(root)
		target := filepath.Join(root, "t")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = Extract(bytes.NewReader(data), target, int64(len(data)))
		entries, err := os.ReadDir(root)
		if err != nil || len(entries) != 1 {
			t.Fatalf("written outside the target: %v", entries)
		}
		// And no symlink inside points outside.
		filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type()&fs.ModeSymlink != 0 {
				l, _ := os.Readlink(p)
				rel, _ := filepath.Rel(target, p)
				if !linkInside(filepath.ToSlash(rel), l) {
					t.Fatalf("symlink %s -> %s leaves the target", rel, l)
				}
			}
			return nil
		})
	})
}

// BenchmarkBuild builds a tree of 4 MiB files, half random, half text:
// 256 MiB in all, or SWDIST_BENCH_BUILD_MIB (1024 for the 1 GiB figure).
//
//	SWDIST_BENCH_BUILD_MIB=1024 go test ./content/pkg -run '^$' -bench Build -benchtime 1x
func BenchmarkBuild(b *testing.B) {
	dir := b.TempDir()
	rng := mrand.New(mrand.NewPCG(3, 4))
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("SWDIST_BENCH_BUILD_MIB")); err == nil && v >= 4 {
		mib = v
	}
	var total int64
	for i := range mib / 4 {
		data := make([]byte, 4<<20)
		if i%2 == 0 {
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
		} else {
			words := []string{"alpha ", "beta ", "gamma ", "delta ", "\n"}
			var buf bytes.Buffer
			for buf.Len() < len(data) {
				buf.WriteString(words[rng.IntN(len(words))])
			}
			copy(data, buf.Bytes())
		}
		if err := os.WriteFile(filepath.Join(dir, "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), data, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(data))
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		s, err := blocks.Open(filepath.Join(b.TempDir(), "blocks"))
		if err != nil {
			b.Fatal(err)
		}
		res, err := Build(context.Background(), dir, "bench", "1", s, BuildOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Stored)/float64(res.Size), "stored/raw")
		s.Close()
	}
}
