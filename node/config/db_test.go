package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDB(t *testing.T) {
	for _, tc := range []struct{ content, want, wantErr string }{
		{"", "swdist.db", ""},
		{"db = \"/var/lib/swdist/server.db\"\n", "/var/lib/swdist/server.db", ""},
		{"db = \"postgres://swdist@dbhost/swdist\"\n", "postgres://swdist@dbhost/swdist", ""},
		{"db = \"mysql://x@y/z\"\n", "", "postgres://"},
		{"db = \"sqlite:server.db\"\n", "sqlite:server.db", ""},
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte("role = \"server\"\nsite = \"hq\"\n"+tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one saying %q", tc.content, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.content, err)
		case tc.wantErr == "" && c.DB != tc.want:
			t.Errorf("%q: db %q, want %q", tc.content, c.DB, tc.want)
		}
	}
}
