package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Status ingestion at a managing node is the hot path: a job for 100,000
// destinations brings several reports from each. Each report is appended to
// job_history (sequential pages) and decided against the destination's
// latest state, kept in memory; job_states, clustered by job and peer, is
// written in key order by flushStates, in the background of ingestion and
// before every read. A crash loses nothing: history rows past the last
// flush are replayed into job_states at open.

// destKey names one destination of one job.
type destKey struct{ job, peer string }

// destState is a destination's latest state: what a new report is compared
// with, and, until flushed, the whole record.
type destState struct {
	State  string
	At     int64
	Reason string
	Exit   int
	Output string
	Via    string
	Held   int64 // while fetching: bytes of the package held, of Total
	Total  int64
}

// transition is one record of job_transitions: a destination's move to a
// state, as [peer, state, at, reason, exit code, output, via, held,
// total] (the last two only while fetching; older records lack them).
type transition struct {
	Peer   string
	State  string
	At     int64
	Reason string
	Exit   int
	Output string
	Via    string
	Held   int64
	Total  int64
}

// appendTransitions writes ts as a JSON array of arrays, by hand: it is on
// the ingestion path, and reflection costs more than the rest of it.
func appendTransitions(b []byte, ts []transition) []byte {
	b = append(b, '[')
	for i, t := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendJSONString(b, t.Peer)
		b = append(b, ',')
		b = appendJSONString(b, t.State)
		b = append(b, ',')
		b = strconv.AppendInt(b, t.At, 10)
		b = append(b, ',')
		b = appendJSONString(b, t.Reason)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(t.Exit), 10)
		b = append(b, ',')
		b = appendJSONString(b, t.Output)
		b = append(b, ',')
		b = appendJSONString(b, t.Via)
		if t.Total > 0 {
			b = append(b, ',')
			b = strconv.AppendInt(b, t.Held, 10)
			b = append(b, ',')
			b = strconv.AppendInt(b, t.Total, 10)
		}
		b = append(b, ']')
	}
	return append(b, ']')
}

// appendJSONString quotes s as JSON; peer IDs and states, the bulk, need
// no escaping.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (t *transition) UnmarshalJSON(b []byte) error {
	return json.Unmarshal(b, &[]any{&t.Peer, &t.State, &t.At, &t.Reason, &t.Exit, &t.Output, &t.Via, &t.Held, &t.Total})
}

// peerString is a peer ID's text form, remembered: each destination
// reports several transitions, and the base58 encoding is not free.
func (s *Store) peerString(p peer.ID) string {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if t, ok := s.live.peerText[p]; ok {
		return t
	}
	if len(s.live.peerText) >= maxLiveEntries {
		clear(s.live.peerText)
	}
	t := base58([]byte(p)) // p.String(), faster
	s.live.peerText[p] = t
	return t
}

// stateRankOf orders a destination's states that carry the same time, as
// stateRank does in SQL.
func stateRankOf(s string) int {
	switch s {
	case "waiting":
		return 0
	case "received":
		return 1
	case "fetching":
		return 2
	case "scheduled":
		return 3
	case "running":
		return 4
	}
	return 5
}

// newer reports whether a moves a destination whose latest state is b.
// "waiting" is said by the relay for an offline child, by the relay's
// clock: it never replaces what the child said, and anything the child
// says replaces it.
func newer(a, b destState) bool {
	switch {
	case a.State == StateWaiting:
		return false
	case b.State == StateWaiting:
		return true
	}
	return a.At > b.At || a.At == b.At && stateRankOf(a.State) > stateRankOf(b.State)
}

// StateWaiting: a relay holds the job for this destination, which is
// offline.
const StateWaiting = "waiting"

// liveStates is the in-memory side of job states.
type liveStates struct {
	flushing sync.Mutex // held by flushStates
	mu       sync.Mutex
	jobs     map[string]map[string]destState // loaded jobs: peer → latest
	entries  int
	dirty    map[destKey]destState // not yet in job_states
	dirtyLen int                   // bytes of reason and output in dirty
	upto     int64                 // the last history row committed
	flushed  time.Time

	peerText map[peer.ID]string
}

// maxLiveEntries bounds the destinations kept in memory; past it, loaded
// jobs are dropped after a flush (and loaded again when reports come).
const maxLiveEntries = 2_000_000

// flushEvery: job_states is written at least this often while reports
// come in, and whenever this many destinations changed.
const (
	flushEvery = 2 * time.Second
	flushDirty = 50_000
	// flushBytes bounds the reasons and output tails held until a flush:
	// 50,000 destinations that each printed their full tail would be
	// 800 MiB.
	flushBytes = 32 << 20
)

// latestIn returns the destination's latest state, loading the job's
// states within tx when not loaded; overlay holds this transaction's
// decisions, not yet committed.
func (s *Store) latestIn(ctx context.Context, tx *tx, overlay map[destKey]destState, k destKey) (destState, bool, error) {
	if d, ok := overlay[k]; ok {
		return d, true, nil
	}
	s.live.mu.Lock()
	job, loaded := s.live.jobs[k.job]
	var d destState
	var ok bool
	if loaded {
		d, ok = job[k.peer]
	}
	s.live.mu.Unlock()
	if loaded {
		return d, ok, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT peer_id, state, at FROM job_states WHERE job_id = ?`, k.job)
	if err != nil {
		return d, false, fmt.Errorf("load states of job %s: %w", k.job, err)
	}
	job = map[string]destState{}
	for rows.Next() {
		var peer string
		var st destState
		if err := rows.Scan(&peer, &st.State, &st.At); err != nil {
			rows.Close()
			return d, false, err
		}
		job[peer] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d, false, err
	}
	s.live.mu.Lock()
	// Unflushed states of this job are newer than what the table says.
	for dk, st := range s.live.dirty {
		if dk.job == k.job {
			job[dk.peer] = st
		}
	}
	s.live.jobs[k.job] = job
	s.live.entries += len(job)
	s.live.mu.Unlock()
	d, ok = job[k.peer]
	return d, ok, nil
}

// commitLive takes a committed transaction's decisions.
func (s *Store) commitLive(overlay map[destKey]destState, upto int64) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	for k, st := range overlay {
		job := s.live.jobs[k.job]
		if job == nil {
			job = map[string]destState{}
			s.live.jobs[k.job] = job
		}
		if _, had := job[k.peer]; !had {
			s.live.entries++
		}
		job[k.peer] = destState{State: st.State, At: st.At}
		if old, ok := s.live.dirty[k]; ok {
			s.live.dirtyLen -= len(old.Reason) + len(old.Output)
		}
		s.live.dirty[k] = st
		s.live.dirtyLen += len(st.Reason) + len(st.Output)
	}
	s.live.upto = max(s.live.upto, upto)
}

// flushDue reports whether job_states should be written now.
func (s *Store) flushDue() bool {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	return len(s.live.dirty) > 0 && (len(s.live.dirty) >= flushDirty || s.live.dirtyLen >= flushBytes || time.Since(s.live.flushed) >= flushEvery) ||
		s.live.entries > maxLiveEntries
}

// flushStates writes the destinations' latest states that changed to
// job_states, in key order, with the history row they reflect.
//
// One flush runs at a time: a read that flushes first must find in
// job_states what a flush under way took from memory.
func (s *Store) flushStates(ctx context.Context) error {
	s.live.flushing.Lock()
	defer s.live.flushing.Unlock()
	s.live.mu.Lock()
	dirty, upto := s.live.dirty, s.live.upto
	s.live.dirty, s.live.dirtyLen = map[destKey]destState{}, 0
	s.live.flushed = time.Now()
	s.live.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	err := s.writeStates(ctx, dirty, upto)
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	if err != nil {
		// Kept for the next flush; newer decisions made meanwhile win.
		for k, st := range dirty {
			if cur, ok := s.live.dirty[k]; !ok || newer(st, cur) {
				if ok {
					s.live.dirtyLen -= len(cur.Reason) + len(cur.Output)
				}
				s.live.dirty[k] = st
				s.live.dirtyLen += len(st.Reason) + len(st.Output)
			}
		}
		return err
	}
	if s.live.entries > maxLiveEntries && len(s.live.dirty) == 0 {
		clear(s.live.jobs)
		s.live.entries = 0
	}
	return nil
}

func (s *Store) writeStates(ctx context.Context, states map[destKey]destState, upto int64) error {
	rows := make([]stateRow, 0, len(states))
	for k, st := range states {
		rows = append(rows, stateRow{k, st})
	}
	slices.SortFunc(rows, func(a, b stateRow) int {
		return cmp.Or(cmp.Compare(a.job, b.job), cmp.Compare(a.peer, b.peer))
	})
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("write job states: %w", err)
	}
	defer tx.Rollback()
	if s.db.d == postgresDB {
		err = writeStatesPG(ctx, tx, rows)
	} else {
		err = writeStatesSQLite(ctx, tx, rows)
	}
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE store_meta SET value = ? WHERE key = 'job_states_upto' AND value < ?`, upto, upto); err != nil {
		return err
	}
	return tx.Commit()
}

// writeStatesSQLite upserts states with a prepared statement of many rows:
// SQLite binds parameters faster than it reads them back from JSON.
func writeStatesSQLite(ctx context.Context, tx *tx, rows []stateRow) error {
	const chunk = 500 // rows per statement: 5,000 parameters
	stmts := map[int]*stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	args := make([]any, 0, 10*chunk)
	for i := 0; i < len(rows); i += chunk {
		part := rows[i:min(i+chunk, len(rows))]
		st := stmts[len(part)]
		if st == nil {
			var err error
			q := `INSERT INTO job_states(job_id, peer_id, state, at, reason, exit_code, output, via, held, total) VALUES ` +
				strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?), ", len(part)-1) + "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + upsertStatesOn
			if st, err = tx.PrepareContext(ctx, q); err != nil {
				return fmt.Errorf("write job states: %w", err)
			}
			stmts[len(part)] = st
		}
		args = args[:0]
		for _, r := range part {
			args = append(args, r.job, r.peer, r.State, r.At, r.Reason, r.Exit, r.Output, r.Via, r.Held, r.Total)
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("write %d job states: %w", len(part), err)
		}
	}
	return nil
}

// writeStatesPG upserts states as arrays, one per column.
func writeStatesPG(ctx context.Context, tx *tx, rows []stateRow) error {
	const chunk = 20_000
	for i := 0; i < len(rows); i += chunk {
		var batch [][]any
		for _, r := range rows[i:min(i+chunk, len(rows))] {
			batch = append(batch, []any{r.job, r.peer, r.State, r.At, r.Reason, r.Exit, r.Output, r.Via, r.Held, r.Total})
		}
		if err := tx.execBatch(ctx, upsertStatesPG, nil, batch); err != nil {
			return fmt.Errorf("write %d job states: %w", len(batch), err)
		}
	}
	return nil
}

// stateRow is a destination's state to write.
type stateRow struct {
	destKey
	destState
}

// replayStates writes to job_states what history holds past the last
// flush: the states decided before a crash.
func (s *Store) replayStates(ctx context.Context) error {
	var upto int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM store_meta WHERE key = 'job_states_upto'`).Scan(&upto); err != nil {
		return fmt.Errorf("read job_states_upto: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, job_id, records FROM job_transitions WHERE id > ? ORDER BY id`, upto)
	if err != nil {
		return fmt.Errorf("read job history to replay: %w", err)
	}
	states := map[destKey]destState{}
	last := upto
	for rows.Next() {
		var job, records string
		if err := rows.Scan(&last, &job, &records); err != nil {
			rows.Close()
			return err
		}
		var ts []transition
		if err := json.Unmarshal([]byte(records), &ts); err != nil {
			rows.Close()
			return fmt.Errorf("job_transitions row %d: %w", last, err)
		}
		for _, t := range ts {
			k := destKey{job, t.Peer}
			st := destState{State: t.State, At: t.At, Reason: t.Reason, Exit: t.Exit, Output: t.Output, Via: t.Via, Held: t.Held, Total: t.Total}
			if cur, ok := states[k]; !ok || newer(st, cur) {
				states[k] = st
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(states) == 0 {
		return nil
	}
	return s.writeStates(ctx, states, last)
}
