package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/swdist/swdist/node/store/storetest"
)

func TestCollections(t *testing.T) { storetest.Each(t, testCollections) }

func testCollections(t *testing.T, dsn string) {
	s := open(t, dsn)
	ctx := context.Background()
	at := time.UnixMilli(time.Now().UnixMilli()).UTC()
	c := Collection{Job: "j1", Peer: "p1", Root: "r1", Files: 2, Bytes: 10, Skipped: []string{"/x: permission denied"}, Via: "relay", ReportedAt: at}
	if err := s.RecordCollection(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordCollection(ctx, Collection{Job: "j1", Peer: "p0", Root: "r0", Files: 1, Via: "relay", ReportedAt: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.CollectionFetched(ctx, "j1", "p1", at, nil); err != nil {
		t.Fatal(err)
	}
	// The same report again keeps what is known of its blocks.
	if err := s.RecordCollection(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.FindCollection(ctx, "j1", "p1")
	if err != nil || !ok || !got.HeldAt.Equal(at) || got.Files != 2 || len(got.Skipped) != 1 || got.Via != "relay" {
		t.Fatalf("found %+v, %v, %v", got, ok, err)
	}
	if roots, err := s.CollectionRoots(ctx); err != nil || len(roots) != 2 || roots[0] != "r0" || roots[1] != "r1" {
		t.Errorf("roots held: %v, %v", roots, err)
	}
	// A failed fetch: not held, with why; a new root forgets the error.
	if err := s.CollectionFetched(ctx, "j1", "p1", at, errors.New("relay down")); err != nil {
		t.Fatal(err)
	}
	all, err := s.Collections(ctx, "j1")
	if err != nil || len(all) != 2 || all[0].Peer != "p0" || all[1].FetchError != "relay down" || !all[1].HeldAt.IsZero() {
		t.Fatalf("collections %+v, %v", all, err)
	}
	c.Root = "r2"
	if err := s.RecordCollection(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.FindCollection(ctx, "j1", "p1"); got.Root != "r2" || got.FetchError != "" {
		t.Errorf("after a new root: %+v", got)
	}
	if _, ok, err := s.FindCollection(ctx, "j2", "p1"); ok || err != nil {
		t.Errorf("another job: %v, %v", ok, err)
	}
	if h, err := s.Hostnames(ctx, []string{"p1"}); err != nil || len(h) != 0 {
		t.Errorf("hostnames without inventory: %v, %v", h, err)
	}
}
