package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// KindCollect is the report kind of what a collect job gathered on one
// destination: the root of its archive, which the managing nodes fetch.
const KindCollect = "collect.result"

// Collected is the body of a "collect.result" report.
type Collected struct {
	Job     string   `cbor:"0,keyasint"`
	Root    string   `cbor:"1,keyasint"` // the archive's root CID
	Files   int      `cbor:"2,keyasint"`
	Bytes   int64    `cbor:"3,keyasint"` // the files' bytes
	Skipped []string `cbor:"4,keyasint,omitempty"`
}

// Collection is what one destination of a collect job gathered, as this
// node knows it.
type Collection struct {
	Job, Peer, Root string
	Files           int
	Bytes           int64
	Skipped         []string // "path: why" for what was not collected
	Via             string   // the child the report came through; this node for its own
	ReportedAt      time.Time
	HeldAt          time.Time // zero: its blocks are not all here yet
	FetchError      string    // why the last fetch failed
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// RecordCollection records what a destination collected. The same report
// again (it arrived twice) keeps what is known of its blocks here.
func (s *Store) RecordCollection(ctx context.Context, c Collection) error {
	skipped, err := json.Marshal(c.Skipped)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO collections(job_id, peer_id, root, files, bytes, skipped, via, reported_at, held_at, fetch_error)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, '')
		ON CONFLICT(job_id, peer_id) DO UPDATE SET files = excluded.files, bytes = excluded.bytes, skipped = excluded.skipped,
			via = excluded.via, reported_at = excluded.reported_at,
			held_at = CASE WHEN collections.root = excluded.root AND collections.held_at != 0 THEN collections.held_at ELSE excluded.held_at END,
			fetch_error = CASE WHEN collections.root = excluded.root THEN collections.fetch_error ELSE '' END,
			root = excluded.root`,
		c.Job, c.Peer, c.Root, c.Files, c.Bytes, string(skipped), c.Via, millis(c.ReportedAt), millis(c.HeldAt))
	if err != nil {
		return fmt.Errorf("record collection of %s for job %s: %w", c.Peer, c.Job, err)
	}
	return nil
}

// CollectionFetched records the outcome of fetching a collection's
// blocks: held since at, or the error.
func (s *Store) CollectionFetched(ctx context.Context, job, peer string, at time.Time, fetchErr error) error {
	msg := ""
	if fetchErr != nil {
		msg, at = fetchErr.Error(), time.Time{}
	}
	_, err := s.db.ExecContext(ctx, `UPDATE collections SET held_at = ?, fetch_error = ? WHERE job_id = ? AND peer_id = ?`,
		millis(at), msg, job, peer)
	return err
}

const collectionColumns = `job_id, peer_id, root, files, bytes, skipped, via, reported_at, held_at, fetch_error`

func scanCollection(row interface{ Scan(...any) error }) (Collection, error) {
	var c Collection
	var skipped string
	var reported, held int64
	if err := row.Scan(&c.Job, &c.Peer, &c.Root, &c.Files, &c.Bytes, &skipped, &c.Via, &reported, &held, &c.FetchError); err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(skipped), &c.Skipped); err != nil {
		return c, fmt.Errorf("collection of %s for job %s: skipped: %w", c.Peer, c.Job, err)
	}
	c.ReportedAt = time.UnixMilli(reported).UTC()
	if held != 0 {
		c.HeldAt = time.UnixMilli(held).UTC()
	}
	return c, nil
}

// FindCollection returns what peer collected for job, if this node knows.
func (s *Store) FindCollection(ctx context.Context, job, peer string) (Collection, bool, error) {
	c, err := scanCollection(s.db.QueryRowContext(ctx, `SELECT `+collectionColumns+` FROM collections WHERE job_id = ? AND peer_id = ?`, job, peer))
	if err == sql.ErrNoRows {
		return Collection{}, false, nil
	}
	return c, err == nil, err
}

// Collections lists what each destination of job collected, by peer.
func (s *Store) Collections(ctx context.Context, job string) ([]Collection, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+collectionColumns+` FROM collections WHERE job_id = ? ORDER BY peer_id`, job)
	if err != nil {
		return nil, fmt.Errorf("read collections of job %s: %w", job, err)
	}
	defer rows.Close()
	var out []Collection
	for rows.Next() {
		c, err := scanCollection(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CollectionRoots lists the root of every collection this node knows:
// blocks to keep, whole or as far as they were fetched.
func (s *Store) CollectionRoots(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT root FROM collections ORDER BY root`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Hostnames maps each of peers whose inventory this node holds to its
// hostname.
func (s *Store) Hostnames(ctx context.Context, peers []string) (map[string]string, error) {
	out := map[string]string{}
	for len(peers) > 0 {
		part := peers[:min(len(peers), 500)]
		peers = peers[len(part):]
		args := make([]any, len(part))
		for i, p := range part {
			args[i] = p
		}
		rows, err := s.db.QueryContext(ctx, `SELECT m.peer_id, f.value FROM inv_machines m JOIN inv_fields f ON f.machine = m.id
			WHERE f.field = 'hostname' AND m.peer_id IN (?`+strings.Repeat(", ?", len(part)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read hostnames: %w", err)
		}
		for rows.Next() {
			var p, h string
			if err := rows.Scan(&p, &h); err != nil {
				rows.Close()
				return nil, err
			}
			out[p] = h
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
