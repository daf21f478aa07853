// Package store is the node's database: SQLite in the node's home by
// default, with its schema migrations embedded and applied at open.
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
	db    *sql.DB
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

// Open opens (creating if needed) the SQLite database at path and brings
// its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(16384)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// One writer at a time is SQLite's rule; a single connection also keeps
	// the pragmas above in force.
	db.SetMaxOpenConns(1)
	codec, err := inventory.NewCodec()
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, codec: codec, itemIDs: map[string]int64{},
		flushNow: make(chan struct{}, 1), stop: make(chan struct{}),
		live: liveStates{flushed: time.Now(), jobs: map[string]map[string]destState{}, dirty: map[destKey]destState{}, peerText: map[peer.ID]string{}}}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	if err := s.replayStates(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	s.flusher.Add(1)
	go s.flushLoop()
	return s, nil
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

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		n, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with its number", name)
		}
		if n <= version {
			continue
		}
		script, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(script)); err != nil {
			tx.Rollback()
			return fmt.Errorf("apply migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", n)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("commit migration %s: %w", base, err)
		}
		version = n
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
		return enroll.ErrTokenUsed
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
