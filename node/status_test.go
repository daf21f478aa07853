package node_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
)

// statusAt waits until the job's status at the named node satisfies cond.
func statusAt(t *testing.T, c *cluster, name, id string, what string, cond func(api.JobStatus) bool) api.JobStatus {
	t.Helper()
	var st api.JobStatus
	var err error
	waitFor(t, what, func() bool {
		st, err = c.nodes[name].JobStatus(context.Background(), id, true)
		return err == nil && cond(st)
	}, func() string { return fmt.Sprintf("%s last said %+v (err %v)", name, st.Counts, err) })
	return st
}

// TestJobRunsAndReportsUp: clients run a job and their states reach the
// server through their relays; a failure comes with its reason and output.
func TestJobRunsAndReportsUp(t *testing.T) { runAndFail(t, standard(t)) }

// runAndFail has the server's admin run a job on every client (it succeeds)
// and one on site a's (it fails), checks their status at the server and at
// relay-a, and returns the first job's ID.
func runAndFail(t *testing.T, c *cluster) string {
	t.Helper()
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	ok, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 1, "echo hello", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	st := statusAt(t, c, "server", ok.ID, "3 clients succeed", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 3 })
	if st.Expected != 3 || st.DonePercent != 100 || len(st.Counts) != 1 || len(st.Subtrees) != 2 {
		t.Errorf("status %+v", st)
	}
	// What a run that succeeded printed is kept, and travels up with it:
	// at the server and at the relay, for one destination by a part of its ID.
	a1 := c.id("a1").String()
	for _, at := range []string{"server", "relay-a"} {
		d, err := c.nodes[at].JobDestination(ctx, ok.ID, a1[len(a1)-10:])
		if err != nil {
			t.Fatalf("%s: destination a1: %v", at, err)
		}
		var states []string
		for _, h := range d.History {
			states = append(states, h.State)
		}
		if d.PeerID != a1 || d.State != "succeeded" || d.Output != "hello\n" || d.At.IsZero() ||
			strings.Join(states, " ") != "received running succeeded" {
			t.Errorf("%s: destination a1 %+v", at, d)
		}
		if at == "server" && d.Via != c.id("relay-a").String() {
			t.Errorf("a1 reported via %s, want relay-a", d.Via)
		}
	}
	for _, tc := range []struct{ q, want string }{
		{"12D3KooW", "matches 3 destinations"}, // every Ed25519 peer ID begins so
		{c.id("relay-a").String(), "is not a destination"},
		{"", "which destination"},
	} {
		if _, err := c.nodes["server"].JobDestination(ctx, ok.ID, tc.q); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("destination %q: %v, want an error with %q", tc.q, err, tc.want)
		}
	}
	bad, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 2, "echo oops >&2; exit 3", "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	st = statusAt(t, c, "server", bad.ID, "2 clients fail", func(s api.JobStatus) bool { return s.Counts["failed"] == 2 })
	if st.Expected != 2 || len(st.Failed) != 2 {
		t.Fatalf("status %+v", st)
	}
	for _, f := range st.Failed {
		if f.Exit != 3 || f.Reason != "exit status 3" || !strings.Contains(f.Output, "oops") {
			t.Errorf("failure reported as %+v", f)
		}
		if d, err := c.nodes["server"].JobDestination(ctx, bad.ID, f.PeerID); err != nil || d.Exit != 3 || d.Output != "oops\n" {
			t.Errorf("failed destination %s: %+v, %v", f.PeerID, d, err)
		}
	}
	// A relay sees its own subtree.
	st = statusAt(t, c, "relay-a", bad.ID, "relay-a sees 2 failures", func(s api.JobStatus) bool { return s.Counts["failed"] == 2 })
	if st.Expected != 2 {
		t.Errorf("relay-a expects %d", st.Expected)
	}
	return ok.ID
}

// TestReportsSurviveRelayRestart: a relay that is down while its clients
// finish a job loses none of their reports and counts none twice.
func TestReportsSurviveRelayRestart(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	res, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 1, "sleep 1", "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a1", "a2"} {
		eventually(t, name+" holds the job", func() bool { held, _ := holds(c.nodes[name], res.ID); return held })
	}
	if err := c.nodes["relay-a"].Close(); err != nil { // before the clients finish
		t.Fatal(err)
	}
	c.start("relay-a")
	st := statusAt(t, c, "server", res.ID, "both succeed", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 })
	total := 0
	for _, n := range st.Counts {
		total += n
	}
	if st.Expected != 2 || total != 2 {
		t.Errorf("expected %d, counted %d: %+v", st.Expected, total, st.Counts)
	}
}

// TestClientRestartedMidRun: a client stopped while a job runs ends it as
// failed ("interrupted") when it starts again: a definite state, never a
// run left hanging.
func TestClientRestartedMidRun(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	res, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 1, "sleep 30", "peer="+c.id("a1").String())})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "a1", res.ID, "a1 runs the job", func(s api.JobStatus) bool { return s.Counts["running"] == 1 })
	if err := c.nodes["a1"].Close(); err != nil {
		t.Fatal(err)
	}
	c.start("a1")
	st := statusAt(t, c, "server", res.ID, "the server sees a1 failed", func(s api.JobStatus) bool { return s.Counts["failed"] == 1 })
	if len(st.Failed) != 1 || !strings.Contains(st.Failed[0].Reason, "interrupted") {
		t.Errorf("status %+v", st)
	}
}

// TestWaitingForOfflineClient: the relay holding a job for an offline
// client says so ("waiting"); once back, the client's own states replace it.
func TestWaitingForOfflineClient(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	a2 := c.id("a2")
	if err := c.nodes["a2"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay-a sees a2 offline", func() bool { return !onlineIn(c.nodes["relay-a"], a2) })
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signJob(t, key, adm, 1, "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	st := statusAt(t, c, "server", job.ID, "a1 succeeded and a2 waits at its relay", func(s api.JobStatus) bool {
		return s.Counts["succeeded"] == 1 && s.Counts["waiting"] == 1
	})
	if st.Destinations[a2.String()] != "waiting" || st.Done {
		t.Errorf("status %+v", st)
	}
	c.start("a2")
	statusAt(t, c, "server", job.ID, "a2 caught up and ran it", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 && s.Done })
}

// TestStatusWithRelayOffline: a relay that goes offline does not take its
// subtree out of job status: a job done there stays done, and a job sent
// while it is down expects its destinations, not reported yet.
func TestStatusWithRelayOffline(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	done, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 1, "true", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", done.ID, "3 clients succeed", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 3 })
	if err := c.nodes["relay-a"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay-a offline", func() bool { return !onlineIn(c.nodes["server"], c.id("relay-a")) })
	st, err := c.nodes["server"].JobStatus(ctx, done.ID, false)
	if err != nil || st.Expected != 3 || st.Counts["succeeded"] != 3 || !st.Done {
		t.Errorf("with relay-a offline, the finished job: %+v, %v; want 3 of 3 succeeded", st, err)
	}
	sent, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 2, "true", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	st = statusAt(t, c, "server", sent.ID, "b1 succeeds", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 1 })
	if st.Expected != 3 || st.Done {
		t.Errorf("a job sent while relay-a is down: %+v; want 3 expected, a1 and a2 not done", st)
	}
}

// TestStatusWithRelayStalled: a relay that stays connected but stops
// answering (its tree handler here reads nothing and never answers, as a
// stopped process would) does not hold up the server's job status or
// tree for the tree's 10 s timeout: the server shows that relay's subtree
// as it last answered, marked stale, while its one question to the relay
// goes on: the second view, 2 s after the first, waits for the same
// question rather than ask again (a view that waited for the question to
// end would leave the next to ask anew).
func TestStatusWithRelayStalled(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signCommand(t, key, adm, 1, "true", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", job.ID, "3 clients succeed", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 3 })

	var asked atomic.Int32
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.nodes["relay-a"].Host().SetStreamHandler(tree.Protocol, func(s network.Stream) {
		asked.Add(1)
		<-release
		_ = s.Reset()
	})
	st, err := c.nodes["server"].JobStatus(ctx, job.ID, false)
	if err != nil || st.Expected != 3 || st.Counts["succeeded"] != 3 {
		t.Errorf("with relay-a stalled, the finished job: %+v, %v; want 3 of 3 succeeded", st, err)
	}
	top, err := c.nodes["server"].Tree(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if ra, ok := find(top, c.id("relay-a")); !ok || !ra.Stale || len(ra.Children) != 2 || !strings.Contains(ra.Error, "no answer within") {
		t.Errorf("stalled relay-a in the server's tree: stale %v, %d children, error %q; want stale, its 2 children as last seen", ra.Stale, len(ra.Children), ra.Error)
	} else if !ra.Children[0].Online || !ra.Children[1].Online {
		t.Errorf("relay-a's children, online when it last answered a moment ago, shown online %v and %v", ra.Children[0].Online, ra.Children[1].Online)
	}
	if rb, _ := find(top, c.id("relay-b")); rb.Stale || len(rb.Children) != 1 {
		t.Errorf("relay-b in the server's tree: stale %v, %d children; want fresh, 1", rb.Stale, len(rb.Children))
	}
	if a := asked.Load(); a != 1 {
		t.Errorf("relay-a was asked %d times while stalled; want once, the second view waiting for the first's question", a)
	}
}

// TestTreeWithDeepRelayStalled: server → r1 → r2 → {r3, c2}, and r3
// stalls as in TestStatusWithRelayStalled. Each relay waits for its own
// child relays half of what its parent said it waits for it (2 s at the
// server, 1 s at r1, 0.5 s at r2), so r3 alone is shown as last
// answered: r2 answers in time, and c2, online throughout, is online.
func TestTreeWithDeepRelayStalled(t *testing.T) {
	c := newCluster(t)
	c.root("server", cert.RoleServer, 0)
	c.join("r1", "server", cert.RoleRelay, "a")
	c.join("r2", "r1", cert.RoleRelay, "a")
	c.join("r3", "r2", cert.RoleRelay, "a")
	c.join("c2", "r2", cert.RoleClient, "a")
	eventually(t, "the tree online at the server", func() bool {
		top, err := c.nodes["server"].Tree(context.Background(), -1)
		return err == nil && top.CountOnline() == 5
	})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.nodes["r3"].Host().SetStreamHandler(tree.Protocol, func(s network.Stream) {
		<-release
		_ = s.Reset()
	})
	for i := range 3 {
		top, err := c.nodes["server"].Tree(context.Background(), -1)
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := find(top, c.id("c2")); !ok || !n.Online {
			t.Errorf("view %d with r3 stalled: c2 listed %v, online %v; want listed and online", i+1, ok, n.Online)
		}
		if n, _ := find(top, c.id("r2")); n.Error != "" {
			t.Errorf("view %d with r3 stalled: r2, which answers, shown with %q", i+1, n.Error)
		}
		if n, _ := find(top, c.id("r3")); !strings.Contains(n.Error, "no answer within") {
			t.Errorf("view %d with r3 stalled: r3 shown with error %q, stale %v; want no answer", i+1, n.Error, n.Stale)
		}
	}
}

// TestTreeViewOfOlderRelay: a relay that speaks only the tree protocol's
// version 1.0.0 (no Wait in the request; it refuses fields it does not
// know) is still asked for its subtree, in that version.
func TestTreeViewOfOlderRelay(t *testing.T) {
	c := standard(t)
	c.nodes["relay-a"].Host().RemoveStreamHandler(tree.Protocol)
	// As an older relay's identify would say from the start.
	eventually(t, "the server knows relay-a lacks tree 1.1.0", func() bool {
		got, err := c.nodes["server"].Host().Peerstore().SupportsProtocols(c.id("relay-a"), tree.Protocol)
		return err == nil && len(got) == 0
	})
	top, err := c.nodes["server"].Tree(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	if ra, ok := find(top, c.id("relay-a")); !ok || ra.Error != "" || ra.Stale || len(ra.Children) != 2 {
		t.Errorf("relay-a on 1.0.0 in the server's tree: error %q, stale %v, %d children; want its 2, fresh", ra.Error, ra.Stale, len(ra.Children))
	}
}
