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
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/home"
)

// certifyAdmin makes an admin key and has the named managing node certify
// it for its own subtree, as 'swdist admin add' does there.
func certifyAdmin(t *testing.T, c *cluster, on string) (crypto.PrivKey, admin.Signed) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, err := home.ReadKey(c.home(on).NodeKey())
	if err != nil {
		t.Fatal(err)
	}
	n := c.nodes[on]
	now := time.Now()
	s, err := admin.Certify(admin.Cert{Name: "alice", Key: key.GetPublic(), Scope: n.Host().ID(), Issuer: n.Host().ID(),
		Org: n.Cert().Org, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour)}, nodeKey, n.Chain())
	if err != nil {
		t.Fatal(err)
	}
	return key, s
}

func signJob(t *testing.T, key crypto.PrivKey, a admin.Signed, seq uint64, target ...string) []byte {
	return signJobFor(t, key, a, seq, time.Hour, target...)
}

// signCommand signs a run job of the given command line.
func signCommand(t *testing.T, key crypto.PrivKey, a admin.Signed, seq uint64, command string, target ...string) []byte {
	return signJobWith(t, key, a, seq, time.Hour, command, target...)
}

// signJobFor signs a run job that expires after ttl.
func signJobFor(t *testing.T, key crypto.PrivKey, a admin.Signed, seq uint64, ttl time.Duration, target ...string) []byte {
	return signJobWith(t, key, a, seq, ttl, "true", target...)
}

func signJobWith(t *testing.T, key crypto.PrivKey, a admin.Signed, seq uint64, ttl time.Duration, command string, target ...string) []byte {
	t.Helper()
	now := time.Now()
	return signManifest(t, key, a, seq, gossip.Manifest{NotBefore: now, ExpiresAt: now.Add(ttl), Type: "run",
		Params: map[string]string{"command": command}}, target...)
}

// state is n's state for job id: "" if it does not hold it.
func state(n *node.Node, id string) string {
	jobs, _ := n.ListJobs(context.Background())
	for _, j := range jobs {
		if j.ID == id {
			return j.State
		}
	}
	return ""
}

// holds reports whether n holds job id, and whether it is for n itself.
func holds(n *node.Node, id string) (held, forMe bool) {
	jobs, _ := n.ListJobs(context.Background())
	for _, j := range jobs {
		if j.ID == id {
			return true, j.ForThisNode
		}
	}
	return false, false
}

func TestManifestReachesExactlyTheTargets(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	// a2 is offline when the job is sent.
	if err := c.nodes["a2"].Close(); err != nil {
		t.Fatal(err)
	}
	v, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signJob(t, key, adm, 1, "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 holds the job", func() bool { held, forMe := holds(c.nodes["a1"], v.ID); return held && forMe })
	// relay-a holds it to pass it on, not as its own; relay-b, with
	// nobody at site a below it, neither keeps it nor passes it on.
	eventually(t, "relay-a holds the job", func() bool { held, forMe := holds(c.nodes["relay-a"], v.ID); return held && !forMe })
	// b1 is not targeted: it never stores it.
	time.Sleep(300 * time.Millisecond)
	if held, _ := holds(c.nodes["b1"], v.ID); held {
		t.Error("b1 stored a job for site a")
	}
	if held, _ := holds(c.nodes["relay-b"], v.ID); held {
		t.Error("relay-b kept a job for nobody below it")
	}
	// a2 comes back and catches up from its parent.
	c.start("a2")
	eventually(t, "a2 caught up", func() bool { held, forMe := holds(c.nodes["a2"], v.ID); return held && forMe })
}

func TestManifestScopeEnforcedAtFirstHop(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	// An admin of relay-a's subtree, submitting at the server: the server
	// passes it down (the scope is below it), relay-b refuses it.
	key, adm := certifyAdmin(t, c, "relay-a")
	v, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signJob(t, key, adm, 1, "all")})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 holds the job", func() bool { held, _ := holds(c.nodes["a1"], v.ID); return held })
	eventually(t, "relay-b counts an out-of-scope rejection", func() bool {
		return c.nodes["relay-b"].GossipRejected()[gossip.ErrOutOfScope.Error()] > 0
	})
	if held, _ := holds(c.nodes["relay-b"], v.ID); held {
		t.Error("relay-b stored a job outside the admin's scope")
	}
	if held, _ := holds(c.nodes["b1"], v.ID); held {
		t.Error("b1 got a job outside the admin's scope")
	}
	// The same admin sequence number for another job is a replay.
	if _, err := c.nodes["relay-a"].SubmitJob(ctx, api.JobSubmit{Manifest: signJob(t, key, adm, 1, "all")}); err == nil {
		t.Error("a second job under the same sequence number was accepted")
	}
	// A tampered manifest is refused where it is submitted.
	raw := signJob(t, key, adm, 2, "all")
	raw[len(raw)/2] ^= 0xff
	if _, err := c.nodes["relay-a"].SubmitJob(ctx, api.JobSubmit{Manifest: raw}); err == nil {
		t.Error("a tampered manifest was accepted")
	}
}

// TestRelayRestartLosesNoManifest: jobs sent while a relay is down reach
// its clients once it is back: the relay catches up from its parent, and
// its clients from it.
func TestRelayRestartLosesNoManifest(t *testing.T) {
	c := standard(t)
	c.tweak = func(cfg *config.Config) { cfg.Tree.CatchUpEvery.Duration = 2 * time.Second }
	for _, name := range []string{"a1", "a2"} { // restart the clients with the short period
		if err := c.nodes[name].Close(); err != nil {
			t.Fatal(err)
		}
		c.start(name)
	}
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	if err := c.nodes["relay-a"].Close(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := range uint64(5) {
		res, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signJob(t, key, adm, seq+1, "site=a", "role=client")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}
	c.start("relay-a")
	for _, name := range []string{"a1", "a2"} {
		for _, id := range ids {
			eventually(t, name+" holds "+id, func() bool { held, _ := holds(c.nodes[name], id); return held })
		}
	}
}

// TestAdminScopeBelowRoot: 'admin add --scope RELAY' on the server has the
// relay certify the admin for its subtree; that admin's jobs stay there.
func TestAdminScopeBelowRoot(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(t.TempDir(), "k.pub")
	if err := home.WritePub(pubPath, key.GetPublic()); err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(pubPath)
	ra := c.id("relay-a").String()
	res, err := c.nodes["server"].CertifyAdmin(ctx, api.AdminRequest{Name: "bob", PubKey: string(pub), Scope: ra})
	if err != nil {
		t.Fatal(err)
	}
	if res.Scope != ra || res.Issuer != ra {
		t.Fatalf("certified for %s by %s, want relay-a for both", res.Scope, res.Issuer)
	}
	adm, err := node.ReadAdminCertText([]byte(res.Cert))
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signJob(t, key, adm, 1, "all")})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 holds bob's job", func() bool { _, forMe := holds(c.nodes["a1"], job.ID); return forMe })
	eventually(t, "relay-b refuses it", func() bool { return c.nodes["relay-b"].GossipRejected()[gossip.ErrOutOfScope.Error()] > 0 })
	if held, _ := holds(c.nodes["b1"], job.ID); held {
		t.Error("b1 got a job outside bob's scope")
	}
	// A relay cannot grant a scope outside its subtree.
	if _, err := c.nodes["relay-b"].CertifyAdmin(ctx, api.AdminRequest{Name: "eve", PubKey: string(pub), Scope: ra}); err == nil {
		t.Error("relay-b had relay-a certify an admin")
	}
}

// TestExpiredBeforeArrival: a client that comes back after a job expired
// learns of it from its relay, keeps it as expired (it will not run it), and
// says so; the job's other targets hold it as usual.
func TestExpiredBeforeArrival(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	key, adm := certifyAdmin(t, c, "server")
	if err := c.nodes["a2"].Close(); err != nil {
		t.Fatal(err)
	}
	job, err := c.nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: signJobFor(t, key, adm, 1, 2*time.Second, "site=a", "role=client")})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 holds the job", func() bool { return state(c.nodes["a1"], job.ID) == "held" })
	time.Sleep(2500 * time.Millisecond) // past the job's expiry (and the one-minute skew allowance is not applied to jobs)
	c.start("a2")
	eventually(t, "a2 holds the job as expired", func() bool { return state(c.nodes["a2"], job.ID) == "expired" })
	if c.nodes["a2"].GossipRejected()[gossip.ErrExpired.Error()] == 0 {
		t.Error("a2 did not count the expired manifest")
	}
	// And the server learns it: a1 ran the job, a2 reports it expired.
	st := statusAt(t, c, "server", job.ID, "the server sees a1 succeeded and a2 expired", func(s api.JobStatus) bool {
		return s.Counts["succeeded"] == 1 && s.Counts["expired"] == 1
	})
	if st.Expected != 2 || st.DonePercent != 100 {
		t.Errorf("status %+v", st)
	}
}
