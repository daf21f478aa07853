package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	cases := []struct {
		name    string
		content string
		wantErr []string // substrings of the error; none: must load
	}{
		{"server", "role = \"server\"\nsite = \"hq\"\n", nil},
		{"client with parent", "role = \"client\"\nsite = \"a\"\n[parent]\nid = \"12D3KooWGRYZDHBembyGJQqQ6WgLqJWYNjnECJwGBnCg8vyrrSvg\"\n", nil},
		{"syntax error names the line", "role = \"server\"\nsite = [\n", []string{"config.toml", "line 2"}},
		{"unknown key", "role = \"server\"\nsite = \"hq\"\nsitte = \"x\"\n", []string{"config.toml", "unknown key", "sitte"}},
		{"bad role", "role = \"boss\"\nsite = \"hq\"\n", []string{"config.toml", "unknown role"}},
		{"no site", "role = \"server\"\n", []string{"site is empty"}},
		{"client without parent", "role = \"client\"\nsite = \"a\"\n", []string{"needs a parent"}},
		{"bad duration", "role = \"server\"\nsite = \"hq\"\n[enroll]\ncert_lifetime = \"forever\"\n", []string{"config.toml", "duration"}},
		{"bad listen address", "role = \"server\"\nsite = \"hq\"\nlisten = [\"tcp:7400\"]\n", []string{"listen address"}},
		{"bad parent id", "role = \"relay\"\nsite = \"a\"\n[parent]\nid = \"nope\"\n", []string{"parent.id"}},
		{"watermarks out of order", "role = \"server\"\nsite = \"hq\"\n[limits]\nconn_low = 10\nconn_high = 5\n", []string{"conn_low"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDefaultsByRole(t *testing.T) {
	for _, tc := range []struct {
		role     string
		minConns int
	}{{"server", 2000}, {"relay", 2000}, {"client", 1}} {
		c := Config{Role: tc.role, Site: "s"}
		c.Defaults()
		// A managing node must hold 2,000 children without the connection
		// manager trimming: its low watermark must be above that.
		if c.Limits.ConnLow < tc.minConns || c.Limits.MaxConns < c.Limits.ConnHigh {
			t.Errorf("%s: limits %+v", tc.role, c.Limits)
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	c := Config{Role: "relay", Site: "a", Groups: []string{"tills"}}
	c.Defaults()
	if err := Save(path, c); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Site != "a" || got.Enroll.CertLifetime != c.Enroll.CertLifetime || got.Limits != c.Limits {
		t.Errorf("round trip: got %+v, want %+v", got, c)
	}
}
