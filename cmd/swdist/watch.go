package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/job"
)

// watchJob polls a job's status until every destination is in a final
// state (or ctx ends): progress bars on a terminal, a line per change
// otherwise, a JSON document per change with --json. It fails if any
// destination failed, so that scripts can wait on it.
func (a *app) watchJob(ctx context.Context, id string, every time.Duration) error {
	c, h, err := a.client()
	if err != nil {
		return err
	}
	poll := func() (api.JobStatus, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		st, err := c.JobStatus(cctx, id, false)
		return st, daemonErr(h, err)
	}
	st, err := poll()
	if err != nil {
		return err
	}
	var show func(api.JobStatus)
	var done func()
	switch f, ok := a.out.(*os.File); {
	case a.json:
		show = func(st api.JobStatus) { _ = a.emit(st, nil) }
	case ok && isatty.IsTerminal(f.Fd()):
		show, done = barsFor(ctx, a.out, st)
	default:
		show = func(st api.JobStatus) {
			fmt.Fprintf(a.out, "%s  %s\n", time.Now().Format("15:04:05"), statusLine(st))
		}
	}
	last := ""
	for {
		if line := statusLine(st); line != last {
			show(st)
			last = line
		}
		if st.Done {
			break
		}
		select {
		case <-ctx.Done():
			if done != nil {
				done()
			}
			return fmt.Errorf("stopped watching job %s at %.0f%% done: %w", id, st.DonePercent, ctx.Err())
		case <-time.After(every):
		}
		next, err := poll()
		if err != nil {
			if done != nil {
				done()
			}
			return err
		}
		st = next
	}
	if done != nil {
		done()
		printJobStatus(a.out, st)
	}
	if n := st.Counts[job.Failed]; n > 0 {
		return fmt.Errorf("job %s: %d of %d destinations failed", id, n, st.Expected)
	}
	return nil
}

// statusLine is a job's counts in one line.
func statusLine(st api.JobStatus) string {
	return fmt.Sprintf("%.0f%% of %d done: %s", st.DonePercent, st.Expected, countsText(st.Counts, st.Fetching))
}

func finished(counts map[string]int) int {
	n := 0
	for s, c := range counts {
		if job.Final(s) {
			n += c
		}
	}
	return n
}

// barsFor draws a bar for the whole job and one per child subtree, each
// with its counts by state.
func barsFor(ctx context.Context, w io.Writer, first api.JobStatus) (show func(api.JobStatus), done func()) {
	p := mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(150*time.Millisecond))
	var mu sync.Mutex
	texts := map[string]string{}
	bars := map[string]*mpb.Bar{}
	bar := func(key, name string, total int) *mpb.Bar {
		if b, ok := bars[key]; ok {
			return b
		}
		b := p.AddBar(int64(total),
			mpb.PrependDecorators(decor.Name(name, decor.WC{W: 14, C: decor.DindentRight}), decor.CountersNoUnit("%d/%d", decor.WC{W: 12})),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
				mu.Lock()
				defer mu.Unlock()
				return texts[key]
			})))
		bars[key] = b
		return b
	}
	set := func(key, name string, expected int, counts map[string]int, fetching *api.FetchBytes) {
		b := bar(key, name, expected)
		mu.Lock()
		texts[key] = countsText(counts, fetching)
		mu.Unlock()
		b.SetTotal(int64(expected), false)
		b.SetCurrent(int64(finished(counts)))
	}
	show = func(st api.JobStatus) {
		set("", "job "+st.ID[:min(8, len(st.ID))], st.Expected, st.Counts, st.Fetching)
		for _, ss := range st.Subtrees {
			set(ss.PeerID, "  "+short(ss.PeerID), ss.Expected, ss.Counts, ss.Fetching)
		}
	}
	done = func() {
		for _, b := range bars {
			b.SetTotal(-1, true)
		}
		p.Wait()
	}
	return show, done
}
