package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/swdist/swdist/node/api"
)

// TestFetchingShown: job status (its table, subtrees and --watch line)
// shows the bytes of the fetching destinations beside their count.
func TestFetchingShown(t *testing.T) {
	f := &api.FetchBytes{Destinations: 2, Held: 3 << 20, Total: 12 << 20}
	for _, tc := range []struct {
		counts   map[string]int
		fetching *api.FetchBytes
		want     string
	}{
		{map[string]int{"succeeded": 3}, nil, "succeeded 3"},
		{map[string]int{"fetching": 2, "succeeded": 1}, f, "fetching 2 (3.0 MiB of 12.0 MiB, 25%), succeeded 1"},
		{map[string]int{"fetching": 1}, &api.FetchBytes{Destinations: 1, Held: 0, Total: 900}, "fetching 1 (0 B of 900 B, 0%)"},
	} {
		if got := countsText(tc.counts, tc.fetching); got != tc.want {
			t.Errorf("countsText(%v) = %q, want %q", tc.counts, got, tc.want)
		}
	}
	var b bytes.Buffer
	printJobStatus(&b, api.JobStatus{ID: "j1", Expected: 3, Counts: map[string]int{"fetching": 2, "succeeded": 1}, Fetching: f,
		Subtrees: []api.SubtreeStatus{{PeerID: "12D3KooWrelay", Expected: 2, Counts: map[string]int{"fetching": 2}, Fetching: f}}})
	if out := b.String(); strings.Count(out, "3.0 MiB of 12.0 MiB, 25%") != 2 {
		t.Errorf("job status shows no bytes for the fetching destinations and subtree:\n%s", out)
	}
}
