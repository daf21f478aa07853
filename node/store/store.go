// Package store is the node's database: SQLite in the node's home by
// default, or PostgreSQL, with one schema whose migrations are embedded
// and applied at open (see dialect.go for how one text serves both).
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/enroll"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/inventory"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is an open node database.
type Store struct {
	db    *db
	codec *inventory.Codec

	mu      sync.Mutex
	itemIDs map[string]int64 // inventory items by kind and attributes

	group groupCommit
	live  liveStates

	flushNow chan struct{} // wakes the flusher
	stop     chan struct{}
	closing  sync.Once
	flusher  sync.WaitGroup
}

// flushLoop writes job_states when told to, and every flushEvery, until
// Close.
func (s *Store) flushLoop() {
	defer s.flusher.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.flushNow:
		case <-time.After(flushEvery):
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.flushStates(ctx); err != nil {
			s.log("write job states (kept for the next flush)", err)
		}
		cancel()
	}
}

// log reports a background failure: the store has no logger of its own
// and its callers see the error at their next call.
func (s *Store) log(what string, err error) {
	slog.Default().Error(what, "svc", "store", "err", err)
}

// Open opens (creating if needed) the database dsn names and brings its
// schema up to date: a postgres:// or postgresql:// URL is a PostgreSQL
// database (which must exist), sqlite:PATH or a path a SQLite file; any
// other URL scheme is an error (see CheckDSN).
func Open(ctx context.Context, dsn string) (*Store, error) {
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	var d dialect
	var conn *sql.DB
	var err error
	where := dsn
	if IsPostgres(dsn) {
		d = postgresDB
		where = redact(dsn)
		conn, err = sql.Open("pgx", dsn)
		if err == nil {
			// Reads run beside the one writer of reports.
			conn.SetMaxOpenConns(8)
			err = conn.PingContext(ctx)
		}
	} else {
		path := SQLitePath(dsn)
		where = path
		conn, err = sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(16384)&_txlock=immediate")
		// One writer at a time is SQLite's rule; a single connection also
		// keeps the pragmas above in force.
		conn.SetMaxOpenConns(1)
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("open %s database %s: %w", d, where, err)
	}
	codec, err := inventory.NewCodec()
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &Store{db: &db{conn, d}, codec: codec, itemIDs: map[string]int64{},
		flushNow: make(chan struct{}, 1), stop: make(chan struct{}),
		live: liveStates{flushed: time.Now(), jobs: map[string]map[string]destState{}, dirty: map[destKey]destState{}, peerText: map[peer.ID]string{}}}
	if err := s.migrate(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s database %s: %w", d, where, err)
	}
	if err := s.replayStates(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s database %s: %w", d, where, err)
	}
	s.flusher.Add(1)
	go s.flushLoop()
	return s, nil
}

// redact is a DSN without its password, for messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(a postgres URL that does not parse)"
	}
	return u.Redacted()
}

// Close closes the database.
func (s *Store) Close() error {
	s.closing.Do(func() { close(s.stop) })
	s.flusher.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.flushStates(ctx) // else replayed at the next open
	return errors.Join(err, s.db.Close())
}

// migrate applies the migrations the database has not had, each in its
// own transaction with the schema version it brings: SQLite keeps it in
// PRAGMA user_version, PostgreSQL in the table swdist_schema, under a lock
// so that two nodes opening one database do not both migrate it.
func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	pg := s.db.d == postgresDB
	if pg {
		if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS swdist_schema (version BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create swdist_schema: %w", err)
		}
	}
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		n, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with its number", name)
		}
		script, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		if err := s.migrateTo(ctx, n, base, string(script)); err != nil {
			return err
		}
	}
	return nil
}

// migrateTo applies one migration if the schema is older than n.
func (s *Store) migrateTo(ctx context.Context, n int, base, script string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var version int
	if s.db.d == postgresDB {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema()))`); err != nil {
			return fmt.Errorf("lock the schema: %w", err)
		}
		err = tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM swdist_schema`).Scan(&version)
		script = pgSchema(script)
	} else {
		err = tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version)
	}
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if n <= version {
		return nil
	}
	if _, err := tx.ExecContext(ctx, script); err != nil {
		return fmt.Errorf("apply migration %s: %w", base, err)
	}
	if s.db.d == postgresDB {
		_, err = tx.ExecContext(ctx, `DELETE FROM swdist_schema; INSERT INTO swdist_schema(version) VALUES(`+strconv.Itoa(n)+`)`)
	} else {
		_, err = tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", n))
	}
	if err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migration %s: %w", base, err)
	}
	return nil
}

// SaveChild implements tree.Store.
func (s *Store) SaveChild(ctx context.Context, c tree.Child) error {
	groups, _ := json.Marshal(nonNil(c.Groups))
	addrs, _ := json.Marshal(nonNil(c.Addrs))
	_, err := s.db.ExecContext(ctx, `INSERT INTO children(peer_id, role, site, groups, addrs, last_seen, revoked)
		VALUES(?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(peer_id) DO UPDATE SET role=excluded.role, site=excluded.site, groups=excluded.groups,
			addrs=excluded.addrs, last_seen=excluded.last_seen, revoked=excluded.revoked`,
		c.PeerID.String(), string(c.Role), c.Site, string(groups), string(addrs), c.LastSeen.Unix(), c.Revoked)
	if err != nil {
		return fmt.Errorf("save child %s: %w", c.PeerID, err)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// LoadChildren implements tree.Store.
func (s *Store) LoadChildren(ctx context.Context) ([]tree.Child, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT peer_id, role, site, groups, addrs, last_seen, revoked FROM children`)
	if err != nil {
		return nil, fmt.Errorf("load children: %w", err)
	}
	defer rows.Close()
	var out []tree.Child
	for rows.Next() {
		var id, role, groups, addrs string
		var seen int64
		var c tree.Child
		if err := rows.Scan(&id, &role, &c.Site, &groups, &addrs, &seen, &c.Revoked); err != nil {
			return nil, fmt.Errorf("load children: %w", err)
		}
		if c.PeerID, err = peer.Decode(id); err != nil {
			return nil, fmt.Errorf("load children: peer id %q: %w", id, err)
		}
		c.Role, c.LastSeen = cert.Role(role), time.Unix(seen, 0).UTC()
		if err := json.Unmarshal([]byte(groups), &c.Groups); err != nil {
			return nil, fmt.Errorf("load child %s groups: %w", id, err)
		}
		if err := json.Unmarshal([]byte(addrs), &c.Addrs); err != nil {
			return nil, fmt.Errorf("load child %s addrs: %w", id, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// UseToken implements enroll.TokenStore: a nonce is redeemed once. Records
// of tokens long expired are dropped as new ones arrive.
func (s *Store) UseToken(ctx context.Context, nonce []byte, by peer.ID, expires time.Time) error {
	now := time.Now()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM used_tokens WHERE expires_at < ?`, now.Add(-24*time.Hour).Unix()); err != nil {
		return fmt.Errorf("prune used tokens: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO used_tokens(nonce, peer_id, used_at, expires_at) VALUES(?, ?, ?, ?)
		ON CONFLICT(nonce) DO NOTHING`, nonce, by.String(), now.Unix(), expires.Unix())
	if err != nil {
		return fmt.Errorf("record token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// The same node again (its answer was lost on the way) may have
		// its certificate again; anyone else may not.
		var first string
		if err := s.db.QueryRowContext(ctx, `SELECT peer_id FROM used_tokens WHERE nonce = ?`, nonce).Scan(&first); err != nil || first != by.String() {
			return enroll.ErrTokenUsed
		}
	}
	return nil
}

// AddRevocation implements revoke.Store.
func (s *Store) AddRevocation(ctx context.Context, r cert.Revocation, sg cert.Signed) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO revocations(body, sig, target, revoker, at) VALUES(?, ?, ?, ?, ?)
		ON CONFLICT(body) DO NOTHING`, sg.Body, sg.Sig, r.Target.String(), r.Revoker.String(), r.At.Unix())
	if err != nil {
		return fmt.Errorf("store revocation: %w", err)
	}
	return nil
}

// Revocations implements revoke.Store.
func (s *Store) Revocations(ctx context.Context) ([]cert.Signed, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT body, sig FROM revocations ORDER BY at`)
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	defer rows.Close()
	var out []cert.Signed
	for rows.Next() {
		var sg cert.Signed
		if err := rows.Scan(&sg.Body, &sg.Sig); err != nil {
			return nil, fmt.Errorf("load revocations: %w", err)
		}
		out = append(out, sg)
	}
	return out, rows.Err()
}
