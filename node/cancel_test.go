package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/node/api"
)

func signManifest(t *testing.T, key crypto.PrivKey, a admin.Signed, seq uint64, m gossip.Manifest, target ...string) []byte {
	t.Helper()
	sel, err := gossip.ParseSelector(target)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.JobID, m.Seq, m.CreatedAt, m.Target = gossip.NewJobID(), seq, now, sel
	if m.NotBefore.IsZero() {
		m.NotBefore = now
	}
	if m.ExpiresAt.IsZero() {
		m.ExpiresAt = now.Add(time.Hour)
	}
	s, err := gossip.Sign(m, key, a)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := gossip.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestCancel: a job waiting for its time on two clients is cancelled there
// by its administrator; a relay-scoped administrator cannot cancel a job of
// the whole tree.
func TestCancel(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	later := time.Now().Add(time.Hour)
	run := func(seq uint64) gossip.Manifest {
		return gossip.Manifest{Type: "run", Params: map[string]string{"command": "true"}, NotBefore: later, ExpiresAt: later.Add(time.Hour)}
	}
	target := []string{"role=client", "site=a"}
	jobA, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, 1, run(1), target...)})
	if err != nil {
		t.Fatal(err)
	}
	statusAt(t, c, "server", jobA.ID, "both clients wait for the job's time", func(s api.JobStatus) bool { return s.Counts["scheduled"] == 2 })

	// Bob administers relay-a's subtree: he reaches both clients, but the
	// job was signed for the whole tree, so his cancel is refused there.
	bobKey, bob := certifyAdmin(t, c, "relay-a")
	cancel := func(k crypto.PrivKey, a admin.Signed, seq uint64, id string) string {
		t.Helper()
		m := gossip.Manifest{Type: gossip.TypeCancel, Params: map[string]string{gossip.ParamJob: id}}
		res, err := c.nodes["relay-a"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, k, a, seq, m, target...)})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	refused := cancel(bobKey, bob, 1, jobA.ID)
	for _, name := range []string{"a1", "a2"} {
		eventually(t, name+" holds bob's cancel", func() bool { held, _ := holds(c.nodes[name], refused); return held })
	}
	time.Sleep(300 * time.Millisecond) // a wrong "cancelled" would reach the server by now
	if st := statusAt(t, c, "server", jobA.ID, "status", func(api.JobStatus) bool { return true }); st.Counts["scheduled"] != 2 {
		t.Fatalf("after a cancel by an administrator of a smaller scope: %+v", st.Counts)
	}
	cancel(key, adm, 2, jobA.ID)
	st := statusAt(t, c, "server", jobA.ID, "both clients cancelled it", func(s api.JobStatus) bool { return s.Counts["cancelled"] == 2 })
	if !st.Done {
		t.Errorf("a job cancelled everywhere is not done: %+v", st)
	}
}

// TestCancelReachesOfflineClient: a client offline while a job and then its
// cancel are sent gets both when it comes back, and the job ends cancelled
// there without running.
func TestCancelReachesOfflineClient(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	if err := c.nodes["a1"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 offline", func() bool { return !onlineIn(c.nodes["server"], c.id("a1")) })
	marker := filepath.Join(t.TempDir(), "ran")
	target := []string{"peer=" + c.id("a1").String()}
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, 1,
		gossip.Manifest{Type: "run", Params: map[string]string{"command": "touch " + marker}}, target...)})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signManifest(t, key, adm, 2,
		gossip.Manifest{Type: gossip.TypeCancel, Params: map[string]string{gossip.ParamJob: job.ID}}, target...)})
	if err != nil {
		t.Fatal(err)
	}
	cancelID := cancelled.ID
	// Both are sent once a1's relay holds them; a1 comes back only then
	// (back before the cancel reached relay-a, it would rightly run the job).
	for _, id := range []string{job.ID, cancelID} {
		eventually(t, "relay-a holds "+id, func() bool { held, _ := holds(c.nodes["relay-a"], id); return held })
	}
	c.start("a1")
	statusAt(t, c, "server", job.ID, "a1 cancelled the job", func(s api.JobStatus) bool { return s.Counts["cancelled"] == 1 })
	if _, err := os.Stat(marker); err == nil {
		t.Error("the cancelled job ran on a1")
	}
}
