// Package job runs the jobs that target this node. Each manifest is taken
// once; its run waits for not-before, refuses to start after expiry, runs
// at most MaxConcurrent at a time, and every state transition (received,
// scheduled, running, succeeded, failed, expired) is recorded locally and
// reported through a durable callback, so a restart ends every job in a
// definite state.
package job

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/swdist/swdist/gossip"
)

// The states a destination reports.
const (
	Received  = "received"
	Scheduled = "scheduled"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
	Expired   = "expired"
	Skipped   = "skipped"
	Cancelled = "cancelled"
	Fetching  = "fetching"
)

// DefaultMaxOutput is the tail of a command's or script's output kept and
// reported up, succeeded or not: it travels in a report (at most
// report.MaxBodyBytes) and is stored for each destination at every
// managing node above it.
const DefaultMaxOutput = 16 << 10

// Final reports whether state ends a destination's run of a job.
func Final(state string) bool {
	switch state {
	case Succeeded, Failed, Expired, Skipped, Cancelled:
		return true
	}
	return false
}

// Status is one state transition of this node's run of a job.
type Status struct {
	Job    string
	State  string
	Reason string
	Exit   int
	Output string // the tail of the output (at most MaxOutput bytes), of every run that ended
	// Held and Total, while fetching: bytes of the package held here,
	// of its total.
	Held, Total int64
}

// RunStore keeps this node's own run state of each job.
type RunStore interface {
	SetRun(ctx context.Context, job, state string) error
	Run(ctx context.Context, job string) (string, error)
	UnfinishedRuns(ctx context.Context) (map[string]string, error)
}

// Config configures an Executor.
type Config struct {
	// Report records a transition durably (the outbox) before returning.
	Report        func(ctx context.Context, s Status) error
	Runs          RunStore
	MaxConcurrent int // jobs running at once, default 2
	MaxOutput     int // bytes of output kept (the tail), default DefaultMaxOutput
	// Builtin runs the job types this node handles itself (by type), each
	// returning a line for the operator.
	Builtin map[string]Builtin
	Logger  *slog.Logger
}

// Builtin runs a job of a type the node handles itself. It reports its
// steps (fetching, running) with step, and returns a line for the operator
// (its last MaxOutput bytes are kept, as of a command's output); an *Ended
// error ends the job in the state it carries (failed with output,
// skipped with why), any other error fails it.
type Builtin func(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (string, error)

// Ended is how a Builtin ends a job otherwise than succeeded.
type Ended struct{ Status }

func (e *Ended) Error() string { return e.State + ": " + e.Reason }

// Executor runs jobs.
type Executor struct {
	cfg   Config
	log   *slog.Logger
	turns *turns
	wg    sync.WaitGroup
	ctx   context.Context

	// mu orders transitions with cancellation: a job cancelled is never
	// moved on by its run afterwards.
	mu        sync.Mutex
	runs      map[string]*runInfo // runs in progress
	cancelled map[string]bool
}

// runInfo is a run in progress.
type runInfo struct {
	stop    context.CancelFunc
	started bool // running: too late to cancel
}

// New makes an Executor whose runs live as long as ctx.
func New(ctx context.Context, cfg Config) *Executor {
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 2
	}
	if cfg.MaxOutput == 0 {
		cfg.MaxOutput = DefaultMaxOutput
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Executor{cfg: cfg, log: cfg.Logger.With("svc", "job"), turns: newTurns(cfg.MaxConcurrent), ctx: ctx,
		runs: map[string]*runInfo{}, cancelled: map[string]bool{}}
}

// Wait waits for the runs in progress to end (after ctx was cancelled).
func (e *Executor) Wait() { e.wg.Wait() }

// Take starts a run of m unless this node took it before.
func (e *Executor) Take(m gossip.Manifest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, running := e.runs[m.JobID]; running {
		return
	}
	st, err := e.cfg.Runs.Run(e.ctx, m.JobID)
	if err != nil {
		e.log.Error("read run state", "job", m.JobID, "err", err)
		return
	}
	if st != "" {
		return
	}
	e.startLocked(m)
}

// start starts a run of m.
func (e *Executor) start(m gossip.Manifest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.startLocked(m)
}

func (e *Executor) startLocked(m gossip.Manifest) {
	ctx, stop := context.WithCancel(e.ctx)
	ticket := e.turns.ticket() // its place in line: the order manifests came
	e.runs[m.JobID] = &runInfo{stop: stop}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.runs, m.JobID)
			e.mu.Unlock()
			stop()
		}()
		e.run(ctx, ticket, m)
	}()
}

// ErrTooLate: the job already runs here, or ended.
var ErrTooLate = errors.New("too late to cancel")

// Cancel stops a job that has not started running here: its run (waiting
// for its time, its window or its turn) ends as cancelled, and one not yet
// received never starts.
func (e *Executor) Cancel(id, reason string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.runs[id]; ok {
		if r.started {
			return fmt.Errorf("job %s is running: %w", id, ErrTooLate)
		}
		r.stop()
	}
	st, err := e.cfg.Runs.Run(e.ctx, id)
	if err != nil {
		return err
	}
	if st == Running || Final(st) {
		return fmt.Errorf("job %s is %s: %w", id, st, ErrTooLate)
	}
	e.cancelled[id] = true
	e.record(Status{Job: id, State: Cancelled, Reason: reason})
	return nil
}

// begin marks a run as started, unless it was cancelled.
func (e *Executor) begin(ctx context.Context, id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.runs[id]
	if !ok || ctx.Err() != nil || e.cancelled[id] {
		return false
	}
	r.started = true
	return true
}

// Progress records how far a job's fetch got: "fetching", with the bytes
// of the package held here and its total. The caller bounds how often
// (see node's progress gate); a job cancelled meanwhile is not moved.
func (e *Executor) Progress(job string, held, total int64) {
	e.transition(Status{Job: job, State: Fetching, Held: held, Total: total,
		Reason: fmt.Sprintf("%s of %s", Bytes(held), Bytes(total))})
}

// Bytes is n bytes for a person: 512 B, 3.1 MiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Missed records that a job for this node reached it only after it
// expired: it will not run, and the managing nodes above are told so.
func (e *Executor) Missed(m gossip.Manifest) {
	e.transition(Status{Job: m.JobID, State: Expired, Reason: "expired at " + m.ExpiresAt.Format(time.RFC3339) + " before it reached this node"})
}

// Recover ends, after a restart, the runs this node did not finish: one
// that was running is failed (it cannot be known how far it got), one that
// had not started is taken again. lookup returns a held manifest.
func (e *Executor) Recover(lookup func(job string) (gossip.Manifest, error)) error {
	runs, err := e.cfg.Runs.UnfinishedRuns(e.ctx)
	if err != nil {
		return fmt.Errorf("read unfinished runs: %w", err)
	}
	for id, st := range runs {
		if st == Running {
			e.transition(Status{Job: id, State: Failed, Reason: "interrupted: the node restarted while it ran"})
			continue
		}
		m, err := lookup(id)
		if err != nil {
			e.transition(Status{Job: id, State: Failed, Reason: "manifest no longer held: " + err.Error()})
			continue
		}
		e.start(m)
	}
	return nil
}

// transition records s, unless the job was cancelled meanwhile.
func (e *Executor) transition(s Status) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancelled[s.Job] {
		return
	}
	e.record(s)
}

func (e *Executor) record(s Status) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.cfg.Runs.SetRun(ctx, s.Job, s.State); err != nil {
		e.log.Error("record run state", "job", s.Job, "state", s.State, "err", err)
	}
	if err := e.cfg.Report(ctx, s); err != nil {
		e.log.Error("report run state", "job", s.Job, "state", s.State, "err", err)
	}
	e.log.Info("job "+s.State, "job", s.Job, "reason", s.Reason)
}

func (e *Executor) run(ctx context.Context, ticket uint64, m gossip.Manifest) {
	defer e.turns.leave(ticket) // however the run ends before its turn
	e.transition(Status{Job: m.JobID, State: Received})
	sched, err := ScheduleOf(m)
	if err != nil {
		e.transition(Status{Job: m.JobID, State: Failed, Reason: err.Error()})
		return
	}
	start := sched.Start(m.NotBefore, nil)
	if start.After(m.ExpiresAt) {
		e.transition(Status{Job: m.JobID, State: Expired, Reason: fmt.Sprintf("no start possible before it expires at %s (maintenance window %s)",
			m.ExpiresAt.Format(time.RFC3339), sched.Window)})
		return
	}
	if wait := time.Until(start); wait > 0 {
		why := "not before " + start.Format(time.RFC3339)
		if sched.Window != nil {
			why += " (maintenance window " + sched.Window.String() + ")"
		}
		e.transition(Status{Job: m.JobID, State: Scheduled, Reason: why})
		e.turns.leave(ticket) // not ready: the jobs behind it go first
		select {
		case <-ctx.Done():
			return // cancelled, or taken again at the next start
		case <-time.After(wait):
		}
	}
	if err := e.turns.acquire(ctx, ticket); err != nil {
		return
	}
	defer e.turns.release()
	if time.Now().After(m.ExpiresAt) {
		e.transition(Status{Job: m.JobID, State: Expired, Reason: "expired at " + m.ExpiresAt.Format(time.RFC3339) + " before it could start"})
		return
	}
	if !e.begin(ctx, m.JobID) {
		return // cancelled while it waited for its turn
	}
	switch m.Type {
	case "run":
		e.transition(Status{Job: m.JobID, State: Running})
		s := e.runCommand(m)
		if e.ctx.Err() != nil {
			// The node is stopping and killed the command: that is not
			// the job's failure. The run stays "running" and Recover ends
			// it as interrupted at the next start.
			return
		}
		e.transition(s)
	default:
		f, ok := e.cfg.Builtin[m.Type]
		if !ok {
			e.transition(Status{Job: m.JobID, State: Failed, Reason: fmt.Sprintf("job type %q is not supported by this node", m.Type)})
			return
		}
		ctx, cancel := context.WithDeadline(e.ctx, m.ExpiresAt)
		out, err := f(ctx, m, func(state, reason string) { e.transition(Status{Job: m.JobID, State: state, Reason: reason}) })
		cancel()
		if e.ctx.Err() != nil {
			return // as for "run": ended as interrupted at the next start
		}
		var ended *Ended
		switch {
		case errors.As(err, &ended):
			ended.Job = m.JobID
			e.transition(ended.Status)
		case err != nil:
			e.transition(Status{Job: m.JobID, State: Failed, Reason: err.Error()})
		default:
			e.transition(Status{Job: m.JobID, State: Succeeded, Output: tailOf(out, e.cfg.MaxOutput)})
		}
	}
}

// runCommand runs a "run" job's command line with /bin/sh, bounded by its
// timeout and the job's expiry, keeping the tail of its output.
func (e *Executor) runCommand(m gossip.Manifest) Status {
	s := Shell(e.ctx, "", m.Params["command"], Timeout(m), e.cfg.MaxOutput)
	s.Job = m.JobID
	return s
}

// Timeout is a job's "timeout" parameter (default 10 minutes).
func Timeout(m gossip.Manifest) time.Duration {
	timeout, err := time.ParseDuration(m.Params["timeout"])
	if err != nil || timeout <= 0 {
		timeout = 10 * time.Minute
	}
	return timeout
}

// Shell runs command with /bin/sh in dir (empty: the current directory),
// in its own process group killed whole at timeout or when ctx ends, and
// keeps the last maxOutput bytes of its output.
func Shell(ctx context.Context, dir, command string, timeout time.Duration, maxOutput int) Status {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &tail{max: maxOutput}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, killed whole on timeout or stop: the shell's
	// children go too, instead of living on with the output pipe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	// The tail is kept whatever the end: what a command that succeeded
	// printed is often what the operator ran it for.
	s := Status{State: Succeeded, Output: strings.ToValidUTF8(string(out.buf), "?")}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return s
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		s.State, s.Reason = Failed, fmt.Sprintf("timed out after %s", timeout)
	case errors.As(err, &ee):
		s.State, s.Exit, s.Reason = Failed, ee.ExitCode(), fmt.Sprintf("exit status %d", ee.ExitCode())
	default:
		s.State, s.Reason = Failed, err.Error()
	}
	return s
}

// tailOf is the last max bytes of s, cut at a rune's start.
func tailOf(s string, max int) string {
	if len(s) <= max {
		return s
	}
	s = s[len(s)-max:]
	for i := 0; i < len(s) && i < utf8.UTFMax; i++ {
		if utf8.RuneStart(s[i]) {
			return s[i:]
		}
	}
	return s
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}
