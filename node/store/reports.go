package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
)

var _ report.Outbox = (*Store)(nil)

// Peek implements report.Outbox.
func (s *Store) Peek(ctx context.Context, limit int) ([]report.Queued, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pos, id, origin, kind, at, body FROM outbox ORDER BY pos LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []report.Queued
	for rows.Next() {
		var q report.Queued
		var origin string
		if err := rows.Scan(&q.Pos, &q.Report.ID, &origin, &q.Report.Kind, &q.Report.At, &q.Report.Body); err != nil {
			return nil, err
		}
		if q.Report.Origin, err = peer.Decode(origin); err != nil {
			return nil, fmt.Errorf("outbox: origin %q: %w", origin, err)
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// Done implements report.Outbox.
func (s *Store) Done(ctx context.Context, positions []int64) error {
	if len(positions) == 0 {
		return nil
	}
	args := make([]any, len(positions))
	for i, p := range positions {
		args[i] = p
	}
	q := `DELETE FROM outbox WHERE pos IN (?` + strings.Repeat(",?", len(positions)-1) + `)`
	_, err := s.db.ExecContext(ctx, q, args...)
	return err
}

// OutboxLen counts the reports waiting to go up.
func (s *Store) OutboxLen(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
	return n, err
}

// JobState is the decoded body of a "job.status" report.
type JobState struct {
	Job    string `cbor:"0,keyasint"`
	State  string `cbor:"1,keyasint"`
	Reason string `cbor:"2,keyasint,omitempty"`
	Exit   int    `cbor:"3,keyasint,omitempty"`
	Output string `cbor:"4,keyasint,omitempty"`
}

// KindJobStatus is the report kind of a job state transition.
const KindJobStatus = "job.status"

// Apply stores reports that reached this node (from a child, through via,
// or from this node itself), in one transaction: each is applied once,
// whatever how often it arrives, and the newest state of each destination
// wins. With forward, they are also queued to go up to the parent.
func (s *Store) Apply(ctx context.Context, via peer.ID, reports []report.Report, forward bool) error {
	return s.apply(ctx, via, reports, forward, nil)
}

// apply is Apply, running also in its transaction before it commits.
func (s *Store) apply(ctx context.Context, via peer.ID, reports []report.Report, forward bool, also func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply reports: %w", err)
	}
	defer tx.Rollback()
	// Prepared once per batch: a batch is up to a thousand reports.
	queue, err := tx.PrepareContext(ctx, `INSERT INTO outbox(id, origin, kind, at, body) VALUES(?, ?, ?, ?, ?)
		ON CONFLICT(id) DO NOTHING`)
	if err != nil {
		return err
	}
	defer queue.Close()
	event, err := tx.PrepareContext(ctx, `INSERT INTO job_events(report_id, job_id, peer_id, state, at) VALUES(?, ?, ?, ?, ?)
		ON CONFLICT(report_id) DO NOTHING`)
	if err != nil {
		return err
	}
	defer event.Close()
	latest, err := tx.PrepareContext(ctx, `INSERT INTO job_states(job_id, peer_id, state, at, reason, exit_code, output, via)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(job_id, peer_id) DO UPDATE SET state=excluded.state, at=excluded.at, reason=excluded.reason,
			exit_code=excluded.exit_code, output=excluded.output, via=excluded.via
		WHERE excluded.at >= job_states.at`)
	if err != nil {
		return err
	}
	defer latest.Close()
	viaID := via.String()
	inv := &invTx{s: s, tx: tx, fresh: map[string]int64{}, gone: map[string]bool{}, stmts: map[string]*sql.Stmt{}}
	defer inv.close()
	for _, r := range reports {
		origin := r.Origin.String()
		if forward {
			if _, err := queue.ExecContext(ctx, r.ID, origin, r.Kind, r.At, r.Body); err != nil {
				return fmt.Errorf("queue report %s: %w", r.ID, err)
			}
		}
		if r.Kind == KindInventory {
			d, err := s.codec.Decode(r.Body)
			if err != nil {
				// Checked by the node before it got here: this is a bug.
				return fmt.Errorf("inventory report %s: %w", r.ID, err)
			}
			if err := inv.apply(ctx, origin, viaID, r, d); err != nil {
				return fmt.Errorf("apply inventory report %s: %w", r.ID, err)
			}
			continue
		}
		if r.Kind != KindJobStatus {
			continue // unknown kinds are only passed on
		}
		var st JobState
		if err := cert.Unmarshal(r.Body, &st); err != nil {
			return fmt.Errorf("report %s: %w", r.ID, err)
		}
		res, err := event.ExecContext(ctx, r.ID, st.Job, origin, st.State, r.At)
		if err != nil {
			return fmt.Errorf("apply report %s: %w", r.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // seen before
		}
		if _, err := latest.ExecContext(ctx, st.Job, origin, st.State, r.At, st.Reason, st.Exit, st.Output, viaID); err != nil {
			return fmt.Errorf("apply report %s: %w", r.ID, err)
		}
	}
	if also != nil {
		if err := also(tx); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	inv.commit()
	return nil
}

// DestState is one destination's latest state for a job.
type DestState struct {
	Peer   string
	State  string
	At     time.Time
	Reason string
	Exit   int
	Output string
	Via    string
}

// JobStates returns the latest state of every destination that reported.
func (s *Store) JobStates(ctx context.Context, job string) ([]DestState, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT peer_id, state, at, reason, exit_code, output, via FROM job_states
		WHERE job_id = ? ORDER BY peer_id`, job)
	if err != nil {
		return nil, fmt.Errorf("read job states: %w", err)
	}
	defer rows.Close()
	var out []DestState
	for rows.Next() {
		var d DestState
		var at int64
		if err := rows.Scan(&d.Peer, &d.State, &at, &d.Reason, &d.Exit, &d.Output, &d.Via); err != nil {
			return nil, err
		}
		d.At = time.UnixMilli(at).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// SetRun records this node's own run state of a job.
func (s *Store) SetRun(ctx context.Context, job, state string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO job_runs(job_id, state, updated) VALUES(?, ?, ?)
		ON CONFLICT(job_id) DO UPDATE SET state=excluded.state, updated=excluded.updated`, job, state, time.Now().Unix())
	return err
}

// Run returns this node's own run state of a job ("" if none).
func (s *Store) Run(ctx context.Context, job string) (string, error) {
	var st string
	err := s.db.QueryRowContext(ctx, `SELECT state FROM job_runs WHERE job_id = ?`, job).Scan(&st)
	if err == sql.ErrNoRows {
		return "", nil
	}
	return st, err
}

// UnfinishedRuns lists the jobs this node took on and did not finish.
func (s *Store) UnfinishedRuns(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT job_id, state FROM job_runs WHERE state NOT IN ('succeeded', 'failed', 'expired', 'skipped', 'cancelled')`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, rows.Err()
}
