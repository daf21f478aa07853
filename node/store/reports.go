package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
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
	// Held and Total, while fetching: bytes of the package held at the
	// destination, of the package's total.
	Held  int64 `cbor:"5,keyasint,omitempty"`
	Total int64 `cbor:"6,keyasint,omitempty"`
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
//
// Applies that arrive while another commits are committed together, in
// one transaction (group commit): a managing node's children report at
// once, and each commit writes every page it touched, so fewer, larger
// transactions write far less. Each caller returns once its reports are
// durable.
func (s *Store) apply(ctx context.Context, via peer.ID, reports []report.Report, forward bool, also func(*tx) error) error {
	req := &applyReq{via: via, reports: reports, forward: forward, also: also, done: make(chan error, 1)}
	s.group.mu.Lock()
	s.group.pending = append(s.group.pending, req)
	lead := !s.group.busy
	s.group.busy = true
	s.group.mu.Unlock()
	if lead {
		s.commitPending()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// It may still be applied: applying again later changes nothing.
		return ctx.Err()
	}
}

// applyReq is one caller's reports waiting for a group commit.
type applyReq struct {
	via     peer.ID
	reports []report.Report
	forward bool
	also    func(*tx) error
	done    chan error
}

// groupCommit queues the applies that wait for the one in progress.
type groupCommit struct {
	mu      sync.Mutex
	pending []*applyReq
	busy    bool
}

// maxGroupReports bounds one group commit.
const maxGroupReports = 20_000

// commitPending commits what is pending, group by group, until nothing is.
func (s *Store) commitPending() {
	for {
		s.group.mu.Lock()
		var group []*applyReq
		n := 0
		for len(s.group.pending) > 0 && (len(group) == 0 || n+len(s.group.pending[0].reports) <= maxGroupReports) {
			n += len(s.group.pending[0].reports)
			group = append(group, s.group.pending[0])
			s.group.pending = s.group.pending[1:]
		}
		if len(group) == 0 {
			s.group.busy = false
			s.group.mu.Unlock()
			return
		}
		s.group.mu.Unlock()
		err := s.commitGroup(group)
		if err != nil && len(group) > 1 {
			// Apart, so that one bad batch fails only its own caller.
			for _, r := range group {
				r.done <- s.commitGroup([]*applyReq{r})
			}
			continue
		}
		for _, r := range group {
			r.done <- err
		}
		if s.flushDue() {
			select { // the flusher writes job_states while reports go on
			case s.flushNow <- struct{}{}:
			default:
			}
		}
	}
}

func (s *Store) commitGroup(group []*applyReq) error {
	// Not any caller's context: the group is theirs together.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("apply reports: %w", err)
	}
	defer tx.Rollback()
	g := &groupTx{tx: tx, overlay: map[destKey]destState{},
		inv: &invTx{s: s, tx: tx, fresh: map[string]int64{}, gone: map[string]bool{}, stmts: map[string]*stmt{}}}
	defer g.inv.close()
	for _, r := range group {
		if err := s.applyTx(ctx, g, r); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("apply reports: %w", err)
	}
	g.inv.commit()
	s.commitLive(g.overlay, g.upto)
	return nil
}

// groupTx is one group commit's transaction and what it decided.
type groupTx struct {
	tx      *tx
	inv     *invTx
	overlay map[destKey]destState // destinations' new latest states
	upto    int64                 // the last history row written
}

// stateRank orders a destination's states that carry the same time.
const stateRank = `CASE %s WHEN 'waiting' THEN 0 WHEN 'received' THEN 1 WHEN 'fetching' THEN 2
	WHEN 'scheduled' THEN 3 WHEN 'running' THEN 4 ELSE 5 END`

// upsertStatesPG writes destinations' latest states, one array per column:
// the newest wins. (SQLite's form is in writeStatesSQLite.)
var upsertStatesPG = batchSQL{postgres: `INSERT INTO job_states(job_id, peer_id, state, at, reason, exit_code, output, via, held, total)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], $8::text[],
		$9::bigint[], $10::bigint[])` + upsertStatesOn}

var upsertStatesOn = `
	ON CONFLICT(job_id, peer_id) DO UPDATE SET state=excluded.state, at=excluded.at, reason=excluded.reason,
		exit_code=excluded.exit_code, output=excluded.output, via=excluded.via, held=excluded.held, total=excluded.total
	WHERE excluded.state != 'waiting' AND (job_states.state = 'waiting' OR excluded.at > job_states.at OR
		(excluded.at = job_states.at AND ` + stateRankExcluded + ` > ` + stateRankStored + `))`

var (
	stateRankExcluded = fmt.Sprintf(stateRank, "excluded.state")
	stateRankStored   = fmt.Sprintf(stateRank, "job_states.state")
)

// applyTx applies one caller's reports in tx.
func (s *Store) applyTx(ctx context.Context, g *groupTx, req *applyReq) error {
	tx, inv := g.tx, g.inv
	viaID := s.peerString(req.via)
	// A batch is up to a thousand reports: each statement below takes all
	// of them at once, as one parameter, since a statement per report
	// costs more than the rows it writes.
	var queued [][]any
	moved := map[string][]transition{} // by job
	for _, r := range req.reports {
		origin := s.peerString(r.Origin)
		if req.forward {
			queued = append(queued, []any{r.ID, origin, r.Kind, r.At, r.Body})
		}
		switch r.Kind {
		case KindInventory:
			d, err := s.codec.Decode(r.Body)
			if err != nil {
				// Checked by the node before it got here: this is a bug.
				return fmt.Errorf("inventory report %s: %w", r.ID, err)
			}
			if err := inv.apply(ctx, origin, viaID, r, d); err != nil {
				return fmt.Errorf("apply inventory report %s: %w", r.ID, err)
			}
		case KindJobStatus:
			var st JobState
			if err := cert.Unmarshal(r.Body, &st); err != nil {
				return fmt.Errorf("report %s: %w", r.ID, err)
			}
			// The newest state of each destination wins, whatever the
			// order of arrival; the transitions that moved it are its
			// history, so a report that arrives twice is recorded once.
			k := destKey{st.Job, origin}
			rec := destState{State: st.State, At: r.At, Reason: st.Reason, Exit: st.Exit, Output: st.Output, Via: viaID, Held: st.Held, Total: st.Total}
			cur, ok, err := s.latestIn(ctx, tx, g.overlay, k)
			if err != nil {
				return err
			}
			if ok && !newer(rec, cur) {
				continue
			}
			g.overlay[k] = rec
			moved[st.Job] = append(moved[st.Job], transition{origin, st.State, r.At, st.Reason, st.Exit, st.Output, viaID, st.Held, st.Total})
		default:
			// Unknown kinds are only passed on.
		}
	}
	if len(queued) > 0 {
		if err := tx.execBatch(ctx, queueOutbox, nil, queued); err != nil {
			return fmt.Errorf("queue %d reports: %w", len(queued), err)
		}
	}
	for _, job := range slices.Sorted(maps.Keys(moved)) {
		records := appendTransitions(nil, moved[job])
		var last int64
		err := tx.QueryRowContext(ctx, `INSERT INTO job_transitions(job_id, records) VALUES(?, ?) RETURNING id`, job, string(records)).Scan(&last)
		if err != nil {
			return fmt.Errorf("record %d transitions of job %s: %w", len(moved[job]), job, err)
		}
		g.upto = max(g.upto, last)
	}
	if req.also != nil {
		return req.also(tx)
	}
	return nil
}

// queueOutbox queues reports to go up, each once.
var queueOutbox = batchSQL{
	sqlite: `INSERT INTO outbox(id, origin, kind, at, body)
		SELECT value->>0, value->>1, value->>2, value->>3, unhex(value->>4) FROM json_each(?) WHERE true
		ON CONFLICT(id) DO NOTHING`,
	postgres: `INSERT INTO outbox(id, origin, kind, at, body)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[])
		ON CONFLICT(id) DO NOTHING`,
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
	Held   int64 // while fetching: bytes of the package held, of Total
	Total  int64
}

// JobStates returns the latest state of every destination that reported.
func (s *Store) JobStates(ctx context.Context, job string) ([]DestState, error) {
	if err := s.flushStates(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+destStateCols+` FROM job_states WHERE job_id = ? ORDER BY peer_id`, job)
	if err != nil {
		return nil, fmt.Errorf("read job states: %w", err)
	}
	defer rows.Close()
	var out []DestState
	for rows.Next() {
		d, err := scanDestState(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// destStateCols are the columns of job_states that scanDestState reads.
const destStateCols = `peer_id, state, at, reason, exit_code, output, via, held, total`

func scanDestState(row interface{ Scan(...any) error }) (DestState, error) {
	var d DestState
	var at int64
	if err := row.Scan(&d.Peer, &d.State, &at, &d.Reason, &d.Exit, &d.Output, &d.Via, &d.Held, &d.Total); err != nil {
		return d, err
	}
	d.At = time.UnixMilli(at).UTC()
	return d, nil
}

// JobState returns the latest state of one destination of a job, with
// its reason and output tail; ok is false if it has not reported.
func (s *Store) JobState(ctx context.Context, job, peerID string) (d DestState, ok bool, err error) {
	if err := s.flushStates(ctx); err != nil {
		return d, false, err
	}
	d, err = scanDestState(s.db.QueryRowContext(ctx, `SELECT `+destStateCols+` FROM job_states WHERE job_id = ? AND peer_id = ?`, job, peerID))
	if err == sql.ErrNoRows {
		return d, false, nil
	}
	if err != nil {
		return d, false, fmt.Errorf("read job state: %w", err)
	}
	return d, true, nil
}

// Transition is one move of a destination's state, as recorded here.
type Transition struct {
	State  string
	At     time.Time
	Reason string
	Exit   int
	Held   int64 // while fetching
	Total  int64
}

// JobHistory returns the transitions of one destination of a job, oldest
// first, without their output (JobState has the last).
func (s *Store) JobHistory(ctx context.Context, job, peerID string) ([]Transition, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT records FROM job_transitions WHERE job_id = ? AND instr(records, ?) > 0 ORDER BY id`,
		job, `"`+peerID+`"`)
	if err != nil {
		return nil, fmt.Errorf("read job history: %w", err)
	}
	defer rows.Close()
	var out []Transition
	for rows.Next() {
		var records string
		if err := rows.Scan(&records); err != nil {
			return nil, err
		}
		var ts []transition
		if err := json.Unmarshal([]byte(records), &ts); err != nil {
			return nil, fmt.Errorf("job history of %s: %w", job, err)
		}
		for _, t := range ts {
			if t.Peer == peerID {
				out = append(out, Transition{State: t.State, At: time.UnixMilli(t.At).UTC(), Reason: t.Reason, Exit: t.Exit, Held: t.Held, Total: t.Total})
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Transition) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return stateRankOf(a.State) - stateRankOf(b.State)
	})
	return out, nil
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
