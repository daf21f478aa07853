package job

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node/store"
)

// newExecutor is an executor whose runs are kept in a real SQLite file.
func newExecutor(t *testing.T, cfg Config) *Executor {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "swdist.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Runs = st
	return New(context.Background(), cfg)
}

func TestRunCommand(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name, command, timeout string
		notBefore, expires     time.Duration
		want                   Status
	}{
		{name: "success keeps its output", command: "echo hi; echo there >&2", want: Status{State: Succeeded, Output: "hi\nthere\n"}},
		{name: "success keeps its tail", command: "head -c 20000 /dev/zero | tr '\\0' x; echo END", want: Status{State: Succeeded}},
		{name: "exit code", command: "echo bad >&2; exit 7", want: Status{State: Failed, Exit: 7, Reason: "exit status 7", Output: "bad\n"}},
		{name: "missing command", command: "no-such-command-here", want: Status{State: Failed, Exit: 127, Reason: "exit status 127"}},
		{name: "timeout kills the whole group", command: "sleep 30 & sleep 30", timeout: "300ms", want: Status{State: Failed, Reason: "timed out after 300ms"}},
		{name: "expired before start", command: "true", notBefore: -2 * time.Hour, expires: -time.Hour, want: Status{State: Expired}},
		{name: "output keeps its tail", command: "head -c 20000 /dev/zero | tr '\\\\0' x; echo END; exit 1", want: Status{State: Failed, Exit: 1, Reason: "exit status 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []Status
			e := newExecutor(t, Config{MaxOutput: 1024,
				Report: func(_ context.Context, s Status) error { mu.Lock(); got = append(got, s); mu.Unlock(); return nil }})
			expires := tc.expires
			if expires == 0 {
				expires = time.Hour
			}
			start := time.Now()
			e.Take(gossip.Manifest{JobID: tc.name, Type: "run", NotBefore: now.Add(tc.notBefore), ExpiresAt: now.Add(expires),
				Params: map[string]string{"command": tc.command, "timeout": tc.timeout}})
			e.Take(gossip.Manifest{JobID: tc.name, Type: "run"}) // taken once only
			e.Wait()
			if time.Since(start) > 10*time.Second {
				t.Errorf("the run took %s: something outlived it", time.Since(start))
			}
			last := got[len(got)-1]
			if last.State != tc.want.State || last.Exit != tc.want.Exit || (tc.want.Reason != "" && last.Reason != tc.want.Reason) {
				t.Errorf("ended %+v, want %+v (all: %+v)", last, tc.want, got)
			}
			if tc.want.Output != "" && last.Output != tc.want.Output {
				t.Errorf("output %q, want %q", last.Output, tc.want.Output)
			}
			if strings.HasSuffix(tc.name, "keeps its tail") && (len(last.Output) != 1024 || last.Output[len(last.Output)-4:] != "END\n") {
				t.Errorf("output of %d bytes ending %q, want the last 1024 ending in END", len(last.Output), last.Output[max(0, len(last.Output)-8):])
			}
			if got[0].State != Received {
				t.Errorf("first transition %s, want received", got[0].State)
			}
		})
	}
}

// TestScheduledRuns: a spread delays the start (scheduled, then run); a
// maintenance window that opens only after the job expires expires it.
func TestScheduledRuns(t *testing.T) {
	now := time.Now()
	later := now.Local().Add(2 * time.Hour)
	closed := fmt.Sprintf("%02d:%02d-%02d:%02d", later.Hour(), later.Minute(), later.Add(time.Minute).Hour(), later.Add(time.Minute).Minute())
	open := fmt.Sprintf("%02d:%02d-%02d:%02d", now.Local().Hour(), now.Local().Minute(), now.Local().Add(30*time.Minute).Hour(), now.Local().Add(30*time.Minute).Minute())
	cases := []struct {
		name   string
		params map[string]string
		states []string
	}{
		{"spread", map[string]string{ParamSpread: "300ms"}, []string{Received, Scheduled, Running, Succeeded}},
		{"window open now", map[string]string{ParamWindow: open}, []string{Received, Running, Succeeded}},
		{"window after expiry", map[string]string{ParamWindow: closed}, []string{Received, Expired}},
		{"bad window", map[string]string{ParamWindow: "soon"}, []string{Received, Failed}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			e := newExecutor(t, Config{
				Report: func(_ context.Context, s Status) error {
					mu.Lock()
					got = append(got, s.State)
					mu.Unlock()
					return nil
				}})
			params := map[string]string{"command": "true"}
			maps.Copy(params, tc.params)
			e.Take(gossip.Manifest{JobID: tc.name, Type: "run", NotBefore: now, ExpiresAt: now.Add(time.Hour), Params: params})
			e.Wait()
			// A spread of 300 ms may draw 0: then there is no wait to show.
			if tc.name == "spread" && len(got) == 3 {
				got = slices.Insert(got, 1, Scheduled)
			}
			if !slices.Equal(got, tc.states) {
				t.Errorf("states %v, want %v", got, tc.states)
			}
		})
	}
}

// TestCancel: a job waiting for its time ends cancelled and never runs; one
// cancelled before it arrives never starts; a running one is too late.
func TestCancel(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	e := newExecutor(t, Config{
		Report: func(_ context.Context, s Status) error {
			mu.Lock()
			got[s.Job] = append(got[s.Job], s.State)
			mu.Unlock()
			return nil
		}})
	now := time.Now()
	job := func(id, command string, notBefore time.Duration) gossip.Manifest {
		return gossip.Manifest{JobID: id, Type: "run", NotBefore: now.Add(notBefore), ExpiresAt: now.Add(2 * time.Hour),
			Params: map[string]string{"command": command}}
	}
	e.Take(job("later", "touch "+filepath.Join(t.TempDir(), "ran"), time.Hour))
	waitFor := func(id, state string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(got[id])
			last := ""
			if n > 0 {
				last = got[id][n-1]
			}
			mu.Unlock()
			if last == state {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never reached %s: %v", id, state, got[id])
			}
		}
	}
	waitFor("later", Scheduled)
	if err := e.Cancel("later", "cancelled by alice"); err != nil {
		t.Fatal(err)
	}
	if err := e.Cancel("unseen", "cancelled by alice"); err != nil {
		t.Fatal(err)
	}
	e.Take(job("unseen", "true", 0)) // arrives after its cancel: never starts
	e.Take(job("now", "sleep 1", 0))
	waitFor("now", Running)
	if err := e.Cancel("now", "too late"); !errors.Is(err, ErrTooLate) {
		t.Errorf("cancelling a running job: %v, want ErrTooLate", err)
	}
	e.Wait()
	want := map[string][]string{
		"later":  {Received, Scheduled, Cancelled},
		"unseen": {Cancelled},
		"now":    {Received, Running, Succeeded},
	}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

// TestRunsInManifestOrder: with one job at a time, jobs taken while
// another runs start in the order they were taken.
func TestRunsInManifestOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	e := newExecutor(t, Config{MaxConcurrent: 1,
		Report: func(_ context.Context, s Status) error {
			if s.State == Running {
				mu.Lock()
				order = append(order, s.Job)
				mu.Unlock()
			}
			return nil
		}})
	now := time.Now()
	job := func(id, command string) gossip.Manifest {
		return gossip.Manifest{JobID: id, Type: "run", NotBefore: now, ExpiresAt: now.Add(time.Hour), Params: map[string]string{"command": command}}
	}
	e.Take(job("first", "sleep 0.3"))
	var want []string
	for i := range 8 {
		id := fmt.Sprintf("j%d", i)
		want = append(want, id)
		e.Take(job(id, "true"))
	}
	e.Wait()
	if !slices.Equal(order, append([]string{"first"}, want...)) {
		t.Errorf("ran in the order %v", order)
	}
}

func TestTurns(t *testing.T) {
	tr := newTurns(1)
	a, b := tr.ticket(), tr.ticket()
	if err := tr.acquire(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.acquire(ctx, b); err == nil {
		t.Fatal("acquired a second slot of one")
	}
	tr.release()
	if err := tr.acquire(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}
