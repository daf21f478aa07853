package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/enroll"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/store/storetest"
)

func newID(t *testing.T) (peer.ID, crypto.PrivKey) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return id, k
}

// open opens a real SQLite file; reopening it must find the same data.
func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestChildrenPersist(t *testing.T) { storetest.Each(t, testChildrenPersist) }

func testChildrenPersist(t *testing.T, dsn string) {
	ctx := context.Background()
	path := dsn
	s := open(t, path)
	id, _ := newID(t)
	want := tree.Child{PeerID: id, Role: cert.RoleClient, Site: "a", Groups: []string{"tills"},
		Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, LastSeen: time.Unix(1700000000, 0).UTC()}
	if err := s.SaveChild(ctx, want); err != nil {
		t.Fatal(err)
	}
	want.Revoked = true
	if err := s.SaveChild(ctx, want); err != nil { // an update, not a second row
		t.Fatal(err)
	}
	s.Close()
	got, err := open(t, path).LoadChildren(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]tree.Child{want}, got); diff != "" {
		t.Errorf("children after reopen (-want +got):\n%s", diff)
	}
}

func TestTokenUsedOnce(t *testing.T) { storetest.Each(t, testTokenUsedOnce) }

func testTokenUsedOnce(t *testing.T, dsn string) {
	ctx := context.Background()
	s := open(t, dsn)
	id, _ := newID(t)
	nonce := cert.NewNonce()
	exp := time.Now().Add(time.Hour)
	if err := s.UseToken(ctx, nonce, id, exp); err != nil {
		t.Fatal(err)
	}
	// The same node asking again (its answer was lost) may; another may not.
	if err := s.UseToken(ctx, nonce, id, exp); err != nil {
		t.Errorf("the same node again: %v", err)
	}
	other, _ := newID(t)
	if err := s.UseToken(ctx, nonce, other, exp); !errors.Is(err, enroll.ErrTokenUsed) {
		t.Errorf("second use by another node: %v, want ErrTokenUsed", err)
	}
	if err := s.UseToken(ctx, cert.NewNonce(), id, exp); err != nil {
		t.Errorf("another token: %v", err)
	}
}

func TestRevocationsPersist(t *testing.T) { storetest.Each(t, testRevocationsPersist) }

func testRevocationsPersist(t *testing.T, dsn string) {
	ctx := context.Background()
	path := dsn
	s := open(t, path)
	target, _ := newID(t)
	revoker, key := newID(t)
	r := cert.Revocation{Target: target, Revoker: revoker, At: time.Unix(1700000000, 0).UTC(), Reason: "lost"}
	sg, err := cert.SignRevocation(r, key)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := s.AddRevocation(ctx, r, sg); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	got, err := open(t, path).Revocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]cert.Signed{sg}, got); diff != "" {
		t.Errorf("revocations after reopen (-want +got):\n%s", diff)
	}
}
