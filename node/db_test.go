package node

import (
	"path/filepath"
	"testing"

	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/home"
)

// TestDBDSN: the database is --db, else the config's db; a SQLite file's
// relative path is in the home.
func TestDBDSN(t *testing.T) {
	h := home.Home{Dir: "/srv/swdist"}
	for _, tc := range []struct{ cfg, opt, want string }{
		{"swdist.db", "", h.DB()},
		{"data/server.db", "", filepath.Join(h.Dir, "data/server.db")},
		{"/var/lib/swdist.db", "", "/var/lib/swdist.db"},
		{"postgres://swdist@dbhost/swdist", "", "postgres://swdist@dbhost/swdist"},
		{"swdist.db", "postgres:///swdist?host=/run/postgresql", "postgres:///swdist?host=/run/postgresql"},
		{"postgres://swdist@dbhost/swdist", "other.db", filepath.Join(h.Dir, "other.db")},
		{"sqlite:data/x.db", "", filepath.Join(h.Dir, "data/x.db")},
		{"sqlite:/var/lib/x.db", "", "sqlite:/var/lib/x.db"},
		// Another scheme is not a file in the home: store.Open refuses it.
		{"swdist.db", "mysql://x", "mysql://x"},
	} {
		n := &Node{home: h, cfg: config.Config{DB: tc.cfg}, opts: Options{DB: tc.opt}}
		if got := n.dbDSN(); got != tc.want {
			t.Errorf("db %q, --db %q: %q, want %q", tc.cfg, tc.opt, got, tc.want)
		}
	}
}
