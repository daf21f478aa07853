package node_test

import (
	"context"
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

	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	ok, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 1, "echo hello", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	st := statusAt(t, c, "server", ok.ID, "3 clients succeed", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 3 })
	if st.Expected != 3 || st.DonePercent != 100 || len(st.Counts) != 1 || len(st.Subtrees) != 2 {
		t.Errorf("status %+v", st)
	}
	bad, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 2, "echo oops >&2; exit 3", "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	st = statusAt(t, c, "server", bad.ID, "2 clients fail", func(s api.JobStatus) bool { return s.Counts["failed"] == 2 })
	if st.Expected != 2 || len(st.Failed) != 2 {
		t.Fatalf("status %+v", st)
	}
	for _, f := range st.Failed {
		if f.Exit != 3 || f.Reason != "exit status 3" {
			t.Errorf("failure reported as %+v", f)
		}
	}
	statusAt(t, c, "relay-a", bad.ID, "relay-a sees 2 failures", func(s api.JobStatus) bool { return s.Counts["failed"] == 2 && s.Expected == 2 })

	// The server restarted reads the same counts back from PostgreSQL.
	if err := c.nodes["server"].Close(); err != nil {
		t.Fatal(err)
	}
	c.tweak = useDB(serverDB)
	c.start("server")
	st = statusAt(t, c, "server", ok.ID, "3 succeeded after a restart", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 3 })
	if st.Expected != 3 || len(st.Counts) != 1 {
		t.Errorf("after a restart: %+v", st)
	}
}
