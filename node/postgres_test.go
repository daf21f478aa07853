package node_test

import (
	"os"
	"testing"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/store/storetest"
)

// TestServerOnPostgres: a server and a relay keep their databases in
// PostgreSQL (each its own), the other nodes in SQLite. Jobs run through
// to succeeded and failed, job status counts them at the server and at the
// relay, and the server restarted finds them in PostgreSQL. Skipped when no
// PostgreSQL answers (see storetest).
func TestServerOnPostgres(t *testing.T) {
	serverDB, relayDB := storetest.Postgres(t), storetest.Postgres(t)
	c := newCluster(t)
	useDB := func(dsn string) func(*config.Config) { return func(cfg *config.Config) { cfg.DB = dsn } }
	c.tweak = useDB(serverDB)
	c.root("server", cert.RoleServer, 0)
	c.tweak = useDB(relayDB)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	c.tweak = nil
	c.join("relay-b", "server", cert.RoleRelay, "b")
	c.join("a1", "relay-a", cert.RoleClient, "a")
	c.join("a2", "relay-a", cert.RoleClient, "a")
	c.join("b1", "relay-b", cert.RoleClient, "b")
	for _, name := range []string{"relay-a", "relay-b", "a1", "a2", "b1"} {
		eventually(t, name+" is online at the server", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
	}
	for _, name := range []string{"server", "relay-a"} {
		if _, err := os.Stat(c.home(name).DB()); !os.IsNotExist(err) {
			t.Errorf("%s has a SQLite file (%v): it should use PostgreSQL only", name, err)
		}
	}

	okID := runAndFail(t, c)

	// The server restarted reads the same counts back from PostgreSQL.
	if err := c.nodes["server"].Close(); err != nil {
		t.Fatal(err)
	}
	c.tweak = useDB(serverDB)
	c.start("server")
	st := statusAt(t, c, "server", okID, "3 succeeded after a restart", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 3 })
	if st.Expected != 3 || len(st.Counts) != 1 {
		t.Errorf("after a restart: %+v", st)
	}
}
