package gossip_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/membertest"
	"github.com/swdist/swdist/node/store"
)

// gnode is one real node for these tests: host, membership, store, gossip.
type gnode struct {
	n   certtest.Node
	h   host.Host
	svc *gossip.Service
	st  *store.Store
}

func startNode(t *testing.T, o certtest.Org, n certtest.Node, parent peer.ID) *gnode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mn := membertest.Start(t, o, n)
	h, m, quiet := mn.H, mn.M, membertest.Quiet()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "swdist.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	certs := o.Certs(t, n)
	svc, err := gossip.New(ctx, h, gossip.Config{Verifier: o.V, Self: func() []cert.Cert { return certs }, Parent: parent,
		Member: m, Store: st, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &gnode{n: n, h: h, svc: svc, st: st}
}

func link(t *testing.T, child, parent *gnode) {
	t.Helper()
	if err := child.h.Connect(context.Background(), peer.AddrInfo{ID: parent.h.ID(), Addrs: parent.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func sign(t *testing.T, key crypto.PrivKey, a admin.Signed, seq uint64, ttl time.Duration, id string) []byte {
	t.Helper()
	sel, _ := gossip.ParseSelector([]string{"all"})
	now := time.Now()
	if id == "" {
		id = gossip.NewJobID()
	}
	s, err := gossip.Sign(gossip.Manifest{JobID: id, Seq: seq, CreatedAt: now.Add(-2 * time.Hour), NotBefore: now.Add(-2 * time.Hour),
		ExpiresAt: now.Add(ttl), Type: "run", Params: map[string]string{"command": "true"}, Target: sel}, key, a)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := gossip.Encode(s)
	return raw
}

// TestBadManifestsStopAtFirstHonestNode: a compromised root publishes bad
// manifests of every kind straight into its topic. The honest relay under
// it refuses each, counting the reason, and its client never sees them;
// a good manifest sent last goes all the way.
func TestBadManifestsStopAtFirstHonestNode(t *testing.T) {
	o := certtest.NewOrg(t)
	rootN := o.RootNode(t)
	relayN := o.Child(t, rootN, cert.RoleRelay, "a")
	sibN := o.Child(t, rootN, cert.RoleRelay, "b")
	clientN := o.Child(t, relayN, cert.RoleClient, "a")
	root := startNode(t, o, rootN, "")
	relay := startNode(t, o, relayN, rootN.ID)
	client := startNode(t, o, clientN, relayN.ID)
	link(t, relay, root)
	link(t, client, relay)

	now := time.Now()
	akey := certtest.NewKey(t)
	certify := func(on certtest.Node, org certtest.Org) admin.Signed {
		s, err := admin.Certify(admin.Cert{Name: "alice", Key: akey.GetPublic(), Scope: on.ID, Issuer: on.ID, Org: org.V.Org,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, on.Key, on.Chain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := certify(rootN, o)
	other := certtest.NewOrg(t)
	foreign := certify(other.RootNode(t), other)
	ofSibling := certify(sibN, o)

	first := sign(t, akey, good, 1, time.Hour, "")
	cases := []struct {
		name, reason string
		raw          []byte
	}{
		{"bad signature", gossip.ErrSignature.Error(), func() []byte {
			raw := sign(t, akey, good, 2, time.Hour, "")
			i := bytes.Index(raw, []byte("true"))
			raw[i] = 'T'
			return raw
		}()},
		{"unknown admin", gossip.ErrUnknownAdm.Error(), sign(t, akey, foreign, 3, time.Hour, "")},
		{"out of scope", gossip.ErrOutOfScope.Error(), sign(t, akey, ofSibling, 4, time.Hour, "")},
		{"expired", gossip.ErrExpired.Error(), sign(t, akey, good, 5, -time.Minute, "")},
		{"replayed", gossip.ErrReplayed.Error(), sign(t, akey, good, 1, time.Hour, "")}, // seq 1 again, another job
		{"malformed", gossip.ErrMalformed.Error(), []byte("\\xa1\\x00\\x01 not a manifest")},
		{"oversized", gossip.ErrOversized.Error(), append(bytes.Clone(first), bytes.Repeat([]byte{0}, gossip.MaxManifestBytes)...)},
	}
	ctx := context.Background()
	// The first good one establishes seq 1 for the replay case, and shows
	// the path works.
	time.Sleep(time.Second) // subscriptions settle
	if err := root.svc.PublishUnchecked(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitJobs(t, client, 1)
	clientBefore := client.svc.Traffic().Received
	for _, tc := range cases {
		if err := root.svc.PublishUnchecked(ctx, tc.raw); err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, tc := range cases {
		for relay.svc.Rejected()[tc.reason] == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the relay did not count a %q rejection; counts: %v", tc.name, tc.reason, relay.svc.Rejected())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A last good manifest goes through: the path was open all along.
	if err := root.svc.PublishUnchecked(ctx, sign(t, akey, good, 9, time.Hour, "")); err != nil {
		t.Fatal(err)
	}
	waitJobs(t, client, 2)
	if got := client.svc.Traffic().Received - clientBefore; got != 1 {
		t.Errorf("the client received %d manifests after the bad ones were sent, want only the last good one", got)
	}
	if n := len(client.svc.Rejected()); n != 0 {
		t.Errorf("bad manifests reached the client: %v", client.svc.Rejected())
	}
	// The relay holds the 2 good jobs, and the expired one only as a record
	// that it will not run it (it is targeted too: "all").
	jobs, _ := relay.st.Jobs(ctx)
	held, expired := 0, 0
	for _, j := range jobs {
		if j.Expired {
			expired++
		} else {
			held++
		}
	}
	if held != 2 || expired != 1 {
		t.Errorf("the relay holds %d jobs and %d expired records, want 2 and 1", held, expired)
	}
}

func waitJobs(t *testing.T, n *gnode, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		jobs, err := n.st.Jobs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == want {
			return
		}
		if time.Now().After(deadline) {
			var ids []string
			for _, j := range jobs {
				ids = append(ids, j.ID)
			}
			t.Fatalf("node holds %d jobs (%s), want %d", len(jobs), strings.Join(ids, " "), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
