package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/gossip"
)

var _ gossip.Store = (*Store)(nil)

// PutManifest implements gossip.Store.
func (s *Store) PutManifest(ctx context.Context, v gossip.Verified, targeted, expired bool) (bool, error) {
	key, err := v.Admin.Key.Raw()
	if err != nil {
		return false, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store manifest: %w", err)
	}
	defer tx.Rollback()
	var held string
	err = tx.QueryRowContext(ctx, `SELECT job_id FROM manifests WHERE job_id = ? OR (admin_key = ? AND admin_seq = ?)`,
		v.JobID, key, v.Seq).Scan(&held)
	switch {
	case err == nil && held == v.JobID:
		return false, nil
	case err == nil:
		return false, fmt.Errorf("%w: admin %q already used sequence %d for job %s", gossip.ErrReplayed, v.Admin.Name, v.Seq, held)
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("store manifest: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO manifests(job_id, admin_key, admin_seq, admin_name, type, target, targeted,
		created_at, expires_at, received_at, raw, expired_on_arrival) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.JobID, key, v.Seq, v.Admin.Name, v.Type, v.Target.String(), targeted, v.CreatedAt.Unix(), v.ExpiresAt.Unix(), time.Now().Unix(), v.Raw, expired)
	if err != nil {
		return false, fmt.Errorf("store manifest %s: %w", v.JobID, err)
	}
	return true, tx.Commit()
}

// ExpiredRetention is how long after expiry a node still hands a manifest to
// its children, so that one returning from a long absence learns what it
// missed and can say so.
const ExpiredRetention = 7 * 24 * time.Hour

// ManifestsAfter implements gossip.Store. Manifests that reached this node
// already expired are not passed on.
func (s *Store) ManifestsAfter(ctx context.Context, after int64, limit int) ([]gossip.Stored, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT local_seq, raw FROM manifests
		WHERE local_seq > ? AND expires_at > ? AND expired_on_arrival = 0
		ORDER BY local_seq LIMIT ?`, after, time.Now().Add(-ExpiredRetention).Unix(), limit)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	defer rows.Close()
	var out []gossip.Stored
	for rows.Next() {
		var it gossip.Stored
		if err := rows.Scan(&it.Cursor, &it.Raw); err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// SyncCursor implements gossip.Store.
func (s *Store) SyncCursor(ctx context.Context, parent peer.ID) (int64, error) {
	var c int64
	err := s.db.QueryRowContext(ctx, `SELECT cursor FROM sync_cursors WHERE parent = ?`, parent.String()).Scan(&c)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return c, err
}

// SetSyncCursor implements gossip.Store.
func (s *Store) SetSyncCursor(ctx context.Context, parent peer.ID, cursor int64) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO sync_cursors(parent, cursor) VALUES(?, ?)
		ON CONFLICT(parent) DO UPDATE SET cursor = excluded.cursor`, parent.String(), cursor)
	return err
}

// Job is a manifest as listed by 'swdist job ls'.
type Job struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Admin     string    `json:"admin"`
	Target    string    `json:"target"`
	ForMe     bool      `json:"for_this_node"`
	Expired   bool      `json:"expired_on_arrival"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Jobs lists the manifests held, newest first.
func (s *Store) Jobs(ctx context.Context) ([]Job, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT job_id, type, admin_name, target, targeted, created_at, expires_at, expired_on_arrival
		FROM manifests ORDER BY local_seq DESC`)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	out := []Job{}
	for rows.Next() {
		var j Job
		var created, expires int64
		if err := rows.Scan(&j.ID, &j.Type, &j.Admin, &j.Target, &j.ForMe, &created, &expires, &j.Expired); err != nil {
			return nil, err
		}
		j.CreatedAt, j.ExpiresAt = time.Unix(created, 0).UTC(), time.Unix(expires, 0).UTC()
		out = append(out, j)
	}
	return out, rows.Err()
}

// ManifestRaw returns the signed manifest of one job.
func (s *Store) ManifestRaw(ctx context.Context, id string) ([]byte, error) {
	var raw []byte
	err := s.db.QueryRowContext(ctx, `SELECT raw FROM manifests WHERE job_id = ?`, id).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("no job %s here: see 'swdist job ls'", id)
	}
	return raw, err
}
