package store

import (
	"context"
	"time"
)

// Pin is a reason to keep a package's blocks: the job that named it (Job
// empty: the package was added here), until Until (zero: no end).
type Pin struct {
	CID   string
	Job   string
	Until time.Time
}

// Live reports whether the pin holds at now.
func (p Pin) Live(now time.Time) bool { return p.Until.IsZero() || now.Before(p.Until) }

// AddPin records a pin; the same package and job again keeps the later
// end.
func (s *Store) AddPin(ctx context.Context, p Pin) error {
	until := int64(0)
	if !p.Until.IsZero() {
		until = p.Until.Unix()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO pins(cid, job_id, until_at) VALUES(?, ?, ?)
		ON CONFLICT(cid, job_id) DO UPDATE SET until_at = CASE
			WHEN pins.until_at = 0 OR excluded.until_at = 0 THEN 0
			WHEN excluded.until_at > pins.until_at THEN excluded.until_at
			ELSE pins.until_at END`, p.CID, p.Job, until)
	return err
}

// Unpin removes every pin of a package.
func (s *Store) Unpin(ctx context.Context, cid string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM pins WHERE cid = ?`, cid)
	return err
}

// Pins lists every pin, by package and end.
func (s *Store) Pins(ctx context.Context) ([]Pin, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT cid, job_id, until_at FROM pins ORDER BY cid, until_at, job_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pin
	for rows.Next() {
		var p Pin
		var until int64
		if err := rows.Scan(&p.CID, &p.Job, &until); err != nil {
			return nil, err
		}
		if until != 0 {
			p.Until = time.Unix(until, 0).UTC()
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// DropExpiredPins removes the pins that ended before now.
func (s *Store) DropExpiredPins(ctx context.Context, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM pins WHERE until_at != 0 AND until_at <= ?`, now.Unix())
	return err
}
