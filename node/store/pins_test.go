package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/swdist/swdist/node/store/storetest"
)

func TestPins(t *testing.T) { storetest.Each(t, testPins) }

func testPins(t *testing.T, dsn string) {
	s := open(t, dsn)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).UTC()
	for _, p := range []Pin{
		{CID: "a", Job: "j1", Until: now.Add(time.Hour)},
		{CID: "a", Job: "j1", Until: now.Add(time.Minute)}, // an earlier end does not shorten it
		{CID: "a", Job: "j2", Until: now.Add(-time.Minute)},
		{CID: "b", Job: ""}, // added here: no end
		{CID: "b", Job: "j3", Until: now.Add(2 * time.Hour)},
	} {
		if err := s.AddPin(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DropExpiredPins(ctx, now); err != nil {
		t.Fatal(err)
	}
	got, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Pin{{CID: "a", Job: "j1", Until: now.Add(time.Hour)}, {CID: "b", Job: ""}, {CID: "b", Job: "j3", Until: now.Add(2 * time.Hour)}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pins (-want +got):\n%s", diff)
	}
	for _, p := range got {
		if !p.Live(now) {
			t.Errorf("%+v is not live at %s", p, now)
		}
	}
	if err := s.Unpin(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Pins(ctx); len(got) != 1 || got[0].CID != "a" {
		t.Errorf("after unpinning b: %+v", got)
	}
}
