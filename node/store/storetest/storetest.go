// Package storetest gives tests a fresh database for each backend of the
// node store: a SQLite file, or a new schema in a PostgreSQL database.
//
// PostgreSQL is the one SWDIST_TEST_POSTGRES names (a postgres:// URL of a
// role that may create schemas); without it, the local server's socket in
// /var/run/postgresql, as the user running the tests, if one answers. When
// none does, PostgreSQL tests are skipped with a message saying so; when
// SWDIST_TEST_POSTGRES is set and does not answer, they fail.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// EnvPostgres names the PostgreSQL server the tests use.
const EnvPostgres = "SWDIST_TEST_POSTGRES"

// defaultPostgres is the local server's socket, as the current user.
const defaultPostgres = "postgres:///postgres?host=/var/run/postgresql&connect_timeout=3"

var probe struct {
	once sync.Once
	dsn  string
	err  error
	set  bool
}

func reach() (string, bool, error) {
	probe.once.Do(func() {
		dsn := os.Getenv(EnvPostgres)
		probe.set = dsn != ""
		if dsn == "" {
			dsn = defaultPostgres
		}
		probe.dsn = dsn
		db, err := sql.Open("pgx", dsn)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
		}
		probe.err = err
	})
	return probe.dsn, probe.set, probe.err
}

// SQLite is the path of a new SQLite file.
func SQLite(t testing.TB) string {
	return filepath.Join(t.TempDir(), "swdist.db")
}

// Postgres is the DSN of a new, empty schema, dropped when the test ends;
// it skips the test when no PostgreSQL server answers.
func Postgres(t testing.TB) string {
	t.Helper()
	base, set, err := reach()
	switch {
	case err != nil && set:
		t.Fatalf("%s=%s: PostgreSQL does not answer: %v", EnvPostgres, base, err)
	case err != nil:
		t.Skipf("no PostgreSQL reachable (%v): set %s=postgres://USER@HOST/DB, a role that may create schemas, to run this on PostgreSQL too", err, EnvPostgres)
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "swdist_test_" + hex.EncodeToString(b[:])
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		db.Close()
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		defer db.Close()
		if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Backends are the store's backends by name, each giving a new database.
var Backends = []struct {
	Name string
	New  func(testing.TB) string
}{
	{"sqlite", SQLite},
	{"postgres", Postgres},
}

// Each runs f once per backend, as a subtest, with a new database.
func Each(t *testing.T, f func(t *testing.T, dsn string)) {
	for _, b := range Backends {
		t.Run(b.Name, func(t *testing.T) { f(t, b.New(t)) })
	}
}
