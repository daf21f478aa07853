package home

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyRoundTripAndMode(t *testing.T) {
	h := Home{Dir: t.TempDir()}
	if err := h.Create(); err != nil {
		t.Fatal(err)
	}
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKey(h.NodeKey(), k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(h.NodeKey())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key written with mode %04o, want 0600", fi.Mode().Perm())
	}
	got, err := ReadKey(h.NodeKey())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equals(k) {
		t.Error("key read back differs")
	}
	if err := os.Chmod(h.NodeKey(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKey(h.NodeKey()); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v", err)
	}
}

func TestCorruptFilesNamed(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		read func(string) error
	}{
		{"node.pem", func(p string) error { _, err := ReadKey(p); return err }},
		{"org.pub", func(p string) error { _, err := ReadPub(p); return err }},
		{"cert", func(p string) error { _, err := ReadChain(p); return err }},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte("-----BEGIN GARBAGE-----\nAAAA\n-----END GARBAGE-----\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := tc.read(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v does not name the file", tc.name, err)
		}
	}
}
