package tree

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFlattenRoundTrip(t *testing.T) {
	leaf := func(id string) Node {
		return Node{PeerID: id, Role: "client", Site: "a", Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, LastSeen: time.Unix(100, 0).UTC(), Children: []Node{}}
	}
	deep := leaf("d")
	for i := range 40 { // deeper than the CBOR nesting bound: the flat form must not care
		deep = Node{PeerID: string(rune('A' + i%26)), Role: "relay", Site: "x", LastSeen: time.Unix(100, 0).UTC(), ChildrenCount: 1, Children: []Node{deep}}
	}
	for _, tc := range []struct {
		name string
		in   Node
	}{
		{"single", leaf("x")},
		{"wide", Node{PeerID: "r", Role: "relay", LastSeen: time.Unix(5, 0).UTC(), ChildrenCount: 3, Children: []Node{leaf("1"), leaf("2"), leaf("3")}}},
		{"deep", deep},
		{"error kept", Node{PeerID: "r", Role: "relay", LastSeen: time.Unix(5, 0).UTC(), Error: "no answer", Children: []Node{}}},
		// Stale is not on the wire: a relay with an error and its subtree
		// listed comes back stale.
		{"stale below", Node{PeerID: "s", Role: "server", LastSeen: time.Unix(5, 0).UTC(), ChildrenCount: 1, Children: []Node{
			{PeerID: "r", Role: "relay", LastSeen: time.Unix(5, 0).UTC(), Error: "no answer within 1s", Stale: true, ChildrenCount: 1, Children: []Node{leaf("c")}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := unflatten(flatten(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			// Compare flat forms: cmp on deeply nested slices is
			// exponential, and flatten is one-to-one.
			if diff := cmp.Diff(flatten(tc.in), flatten(got)); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if !reflect.DeepEqual(tc.in, got) {
				t.Error("round trip differs in a field flatten does not carry")
			}
		})
	}
}

func TestUnflattenRejectsBadIndexes(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []flatNode
	}{
		{"empty", nil},
		{"top has a parent", []flatNode{{Up: 0}}},
		{"forward reference", []flatNode{{Up: -1}, {Up: 2}, {Up: 0}}},
		{"negative", []flatNode{{Up: -1}, {Up: -5}}},
	} {
		if _, err := unflatten(tc.in); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	min, max := time.Second, time.Minute
	for n := range 40 {
		ceil := max
		if n < 30 && min<<n < max {
			ceil = min << n
		}
		var sum time.Duration
		for range 200 {
			d := Backoff(n, min, max)
			if d < 0 || d > ceil {
				t.Fatalf("attempt %d: %s outside [0, %s]", n, d, ceil)
			}
			sum += d
		}
		// Full jitter spreads waits over the whole window: the mean of 200
		// draws is near half the ceiling, not at either end.
		if mean := sum / 200; mean < ceil/4 || mean > ceil*3/4 {
			t.Errorf("attempt %d: mean wait %s for a window of %s", n, mean, ceil)
		}
	}
}
