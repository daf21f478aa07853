package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swdist/swdist/node/api"
)

// TestPackagesCLI: a package added on the server is held there and unpacks
// to the same files; mistakes are refused with what to do.
func TestPackagesCLI(t *testing.T) {
	dir := shortDir(t)
	home := filepath.Join(dir, "S")
	must(t, nil, home, append([]string{"init", "--role", "server", "--site", "hq"}, loopbackListen...)...)
	startDaemon(t, home)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "bin", "tool.sh"), "#!/bin/sh\necho tool\n", 0o755)
	writeFile(t, filepath.Join(src, "README"), strings.Repeat("swdist ", 10000), 0o644)

	var added api.Package
	must(t, &added, home, "package", "add", src, "--name", "tool", "--version", "1.0", "--json")
	if added.CID == "" || added.Name != "tool" || added.Chunks < 1 || added.StoredBytes >= added.Size || !added.Held {
		t.Errorf("package add: %+v", added)
	}
	// The same tree again gives the same package.
	var again api.Package
	must(t, &again, home, "package", "add", src, "--name", "tool", "--version", "1.0", "--json")
	if again.CID != added.CID {
		t.Errorf("the same tree added twice: %s then %s", added.CID, again.CID)
	}
	var ls []api.Package
	must(t, &ls, home, "package", "ls", "--json")
	if len(ls) != 1 || ls[0].CID != added.CID || !ls[0].Held {
		t.Errorf("package ls: %+v", ls)
	}
	out := filepath.Join(dir, "out")
	must(t, nil, home, "package", "get", "tool@1.0", "--out", out)
	got, err := os.ReadFile(filepath.Join(out, "bin", "tool.sh"))
	if err != nil || string(got) != "#!/bin/sh\necho tool\n" {
		t.Errorf("unpacked tool.sh: %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(out, "bin", "tool.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("unpacked tool.sh mode: %v", fi.Mode())
	}
	writeFile(t, filepath.Join(src, "README"), "changed", 0o644)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"package", "add", src}, 2, "--name and --version are required"},
		{[]string{"package", "add", src, "--name", "tool", "--version", "1.0"}, 1, "already another package"},
		{[]string{"package", "add", filepath.Join(dir, "nope"), "--name", "x", "--version", "1"}, 1, "no such file"},
		{[]string{"package", "get", "tool@1.0", "--out", out}, 1, "exists"},
		{[]string{"package", "get", "tool@9", "--out", filepath.Join(dir, "o2")}, 1, "no such package"},
		{[]string{"package", "get", "tool@1.0"}, 2, "--out"},
	} {
		r := cli(t, home, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("swdist %v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
}
