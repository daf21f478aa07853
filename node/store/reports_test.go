package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node/store/storetest"
)

func statusReport(t *testing.T, id, job, state string, at int64) report.Report {
	t.Helper()
	body, err := cert.Marshal(JobState{Job: job, State: state, Reason: state + " reason"})
	if err != nil {
		t.Fatal(err)
	}
	return report.Report{ID: id, Kind: KindJobStatus, At: at, Body: body}
}

// TestApplyIdempotentLatestWins: a report applied twice counts once; the
// newest state of a destination wins whatever the order of arrival; with
// forward, each report is queued once for the parent.
func TestApplyIdempotentLatestWins(t *testing.T) { storetest.Each(t, testApplyIdempotentLatestWins) }

func testApplyIdempotentLatestWins(t *testing.T, dsn string) {
	ctx := context.Background()
	s := open(t, dsn)
	a, _ := newID(t)
	b, _ := newID(t)
	via, _ := newID(t)
	mk := func(origin string, state string, at int64) report.Report {
		return statusReport(t, "job1/"+origin+"/"+state, "job1", state, at)
	}
	ra := mk(a.String(), "running", 100)
	ra.Origin = a
	sa := mk(a.String(), "succeeded", 200)
	sa.Origin = a
	rb := mk(b.String(), "failed", 150)
	rb.Origin = b
	// Out of order, and repeated (a lost acknowledgement).
	for _, batch := range [][]report.Report{{sa, rb}, {ra}, {sa, ra, rb}} {
		if err := s.Apply(ctx, via, batch, true); err != nil {
			t.Fatal(err)
		}
	}
	states, err := s.JobStates(ctx, "job1")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range states {
		got[d.Peer] = d.State
		if d.Via != via.String() || d.Reason != d.State+" reason" {
			t.Errorf("state %+v", d)
		}
	}
	if len(got) != 2 || got[a.String()] != "succeeded" || got[b.String()] != "failed" {
		t.Errorf("latest states %v, want a succeeded and b failed", got)
	}
	// History holds the transitions that moved a state, each once: a's
	// "running" arrived after its "succeeded" and moved nothing.
	events := countTransitions(t, s)
	if events != 2 {
		t.Errorf("%d transitions recorded, want 2 (each report once)", events)
	}
	if n, _ := s.OutboxLen(ctx); n != 3 {
		t.Errorf("%d reports queued for the parent, want 3", n)
	}
}

// TestStatesReplayedAfterCrash: states acknowledged but not yet written to
// job_states when the process dies are rebuilt from history at open.
func TestStatesReplayedAfterCrash(t *testing.T) { storetest.Each(t, testStatesReplayedAfterCrash) }

func testStatesReplayedAfterCrash(t *testing.T, dsn string) {
	ctx := context.Background()
	path := dsn
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newID(t)
	via, _ := newID(t)
	r1 := statusReport(t, "job1/a/running", "job1", "running", 100)
	r1.Origin = a
	r2 := statusReport(t, "job1/a/failed", "job1", "failed", 200)
	r2.Origin = a
	// Die without writing job_states: no flusher, then close the file.
	s.closing.Do(func() { close(s.stop) })
	s.flusher.Wait()
	if err := s.Apply(ctx, via, []report.Report{r1, r2}, false); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.db.QueryRow(`SELECT count(*) FROM job_states`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("job_states has %d rows before the crash (%v): the test needs them unwritten", rows, err)
	}
	s.db.Close()

	s = open(t, path)
	states, err := s.JobStates(ctx, "job1")
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || states[0].State != "failed" || states[0].Reason != "failed reason" || states[0].Via != via.String() {
		t.Errorf("after the crash: %+v", states)
	}
}

// TestServerRestartMidJob: a 1,000-destination job's reports arrive in
// batches; the server dies half way (what it had not written to job_states
// yet included), and the relay sends again the batches it had no
// acknowledgement for. The final counts are exact, and each transition is
// in the history once.
func TestServerRestartMidJob(t *testing.T) { storetest.Each(t, testServerRestartMidJob) }

func testServerRestartMidJob(t *testing.T, dsn string) {
	ctx := context.Background()
	path := dsn
	via, _ := newID(t)
	const destinations = 1000
	ids := make([]peer.ID, destinations)
	for d := range ids {
		ids[d], _ = newID(t)
	}
	var batches [][]report.Report
	for _, state := range []string{"received", "running", "succeeded"} {
		for i := 0; i < destinations; i += 100 {
			var b []report.Report
			for d := i; d < i+100; d++ {
				r := statusReport(t, fmt.Sprintf("job1/%d/%s", d, state), "job1", state, int64(1000+len(batches)))
				r.Origin = ids[d]
				b = append(b, r)
			}
			batches = append(batches, b)
		}
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	half := len(batches) / 2
	for _, b := range batches[:half] {
		if err := s.Apply(ctx, via, b, false); err != nil {
			t.Fatal(err)
		}
	}
	// The server dies: the flusher is stopped, the file closed unflushed.
	s.closing.Do(func() { close(s.stop) })
	s.flusher.Wait()
	s.db.Close()

	s = open(t, path)
	for _, b := range batches[half-3:] { // three batches sent again
		if err := s.Apply(ctx, via, b, false); err != nil {
			t.Fatal(err)
		}
	}
	states, err := s.JobStates(ctx, "job1")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, d := range states {
		counts[d.State]++
	}
	if len(states) != destinations || counts["succeeded"] != destinations {
		t.Errorf("%d destinations, by state %v; want %d succeeded", len(states), counts, destinations)
	}
	transitions := countTransitions(t, s)
	if transitions != 3*destinations {
		t.Errorf("%d transitions recorded, want %d (each once)", transitions, 3*destinations)
	}
}

// countTransitions counts the transitions recorded in job_transitions.
func countTransitions(t *testing.T, s *Store) int {
	t.Helper()
	rows, err := s.db.Query(`SELECT records FROM job_transitions`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var records string
		var ts []transition
		if err := rows.Scan(&records); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(records), &ts); err != nil {
			t.Fatal(err)
		}
		n += len(ts)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDestOutput: a destination's reason and output tail, succeeded or
// failed, are kept as they came (on PostgreSQL a NUL byte becomes U+FFFD),
// through a flush and a reopen; its history has each state once, in order.
func TestDestOutput(t *testing.T) { storetest.Each(t, testDestOutput) }

func testDestOutput(t *testing.T, dsn string) {
	ctx := context.Background()
	s := open(t, dsn)
	a, _ := newID(t)
	via, _ := newID(t)
	long := strings.Repeat("x", 16<<10-4) + "END\n"
	mk := func(state, output string, at int64) report.Report {
		body, err := cert.Marshal(JobState{Job: "j", State: state, Output: output, Exit: len(output) % 7})
		if err != nil {
			t.Fatal(err)
		}
		return report.Report{ID: "j/" + a.String() + "/" + state, Origin: a, Kind: KindJobStatus, At: at, Body: body}
	}
	if err := s.Apply(ctx, via, []report.Report{mk("received", "", 1), mk("running", "", 2)}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, via, []report.Report{mk("succeeded", long, 3), mk("running", "", 2)}, false); err != nil {
		t.Fatal(err)
	}
	d, ok, err := s.JobState(ctx, "j", a.String())
	if err != nil || !ok || d.State != "succeeded" || d.Output != long || d.Via != via.String() || d.Exit != len(long)%7 {
		t.Fatalf("state %v %v: %s, %d bytes of output, via %s", ok, err, d.State, len(d.Output), d.Via)
	}
	if _, ok, err := s.JobState(ctx, "j", via.String()); ok || err != nil {
		t.Errorf("a peer that did not report: %v, %v", ok, err)
	}
	hist, err := s.JobHistory(ctx, "j", a.String())
	var states []string
	for _, h := range hist {
		states = append(states, h.State)
	}
	if err != nil || strings.Join(states, " ") != "received running succeeded" {
		t.Errorf("history %v, %v", states, err)
	}

	// A second job whose output carries a NUL byte, replayed at reopen.
	body, _ := cert.Marshal(JobState{Job: "k", State: "failed", Reason: "exit status 1", Output: "a\x00b\n"})
	if err := s.Apply(ctx, via, []report.Report{{ID: "k/1", Origin: a, Kind: KindJobStatus, At: 5, Body: body}}, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dsn)
	d, ok, err = s.JobState(ctx, "k", a.String())
	want := "a\x00b\n"
	if IsPostgres(dsn) {
		want = "a\uFFFDb\n"
	}
	if err != nil || !ok || d.Output != want || d.Reason != "exit status 1" {
		t.Errorf("after reopen: %+v %v %v, want output %q", d, ok, err, want)
	}
}
