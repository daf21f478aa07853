package pkg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBuildFilesRoundTrip: files picked from anywhere are archived under
// the names given, with the directories above them, and unpack as they
// were; the same files give the same root.
func TestBuildFilesRoundTrip(t *testing.T) {
	src := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := strings.Repeat("log line 0123456789\n", 40000) // several chunks
	files := []File{
		{Path: write("b.log", "second\n"), Name: "var/log/app/b.log", Size: 7, Mode: 0o640},
		{Path: write("a.log", big), Name: "var/log/app/a.log", Size: int64(len(big)), Mode: 0o640},
		{Path: write("conf", "x = 1\n"), Name: "etc/app.conf", Size: 6, Mode: 0o644},
		// A file that grew after it was listed: its first bytes only.
		{Path: write("grown", "kept|dropped"), Name: "var/log/grown", Size: 4, Mode: 0o600},
	}
	store := openStore(t)
	ctx := context.Background()
	res, err := BuildFiles(ctx, files, "collect", "job1", store, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 4 || res.Chunks < 2 {
		t.Errorf("result %+v", res)
	}
	again, err := BuildFiles(ctx, []File{files[3], files[2], files[1], files[0]}, "collect", "job1", store, BuildOptions{})
	if err != nil || again.Root != res.Root {
		t.Errorf("same files in another order: %v, %v; want %v", again.Root, err, res.Root)
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := Unpack(ctx, store, res.Root, out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{".": "dir -rwxr-xr-x", "etc": "dir -rwxr-xr-x", "var": "dir -rwxr-xr-x", "var/log": "dir -rwxr-xr-x",
		"var/log/app": "dir -rwxr-xr-x", "var/log/app/a.log": "-rw-r----- " + big, "var/log/app/b.log": "-rw-r----- second\n",
		"etc/app.conf": "-rw-r--r-- x = 1\n", "var/log/grown": "-rw------- kept"}
	if diff := cmp.Diff(want, snapshot(t, out)); diff != "" {
		t.Errorf("unpacked (-want +got):\n%s", diff)
	}
}

func TestBuildFilesRefuses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	for name, files := range map[string][]File{
		"absolute":         {{Path: p, Name: "/etc/passwd", Size: 5}},
		"dot-dot":          {{Path: p, Name: "../x", Size: 5}},
		"unclean":          {{Path: p, Name: "a//b", Size: 5}},
		"twice":            {{Path: p, Name: "a", Size: 5}, {Path: p, Name: "a", Size: 5}},
		"file and its dir": {{Path: p, Name: "a", Size: 5}, {Path: p, Name: "a/b", Size: 5}},
	} {
		if _, err := BuildFiles(context.Background(), files, "collect", "v", store, BuildOptions{}); !errors.Is(err, ErrUnsafe) {
			t.Errorf("%s: %v, want ErrUnsafe", name, err)
		}
	}
	// A file that shrank after it was listed.
	_, err := BuildFiles(context.Background(), []File{{Path: p, Name: "f", Size: 9}}, "collect", "v", store, BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("shrunk file: %v", err)
	}
}
