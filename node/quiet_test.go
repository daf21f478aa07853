package node

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestQuietPeers: which peers are pinged, and which given up, as time
// passes and bytes arrive. Each step happens at its time (seconds) with
// the byte counts and requests in flight it gives; quiet is 5 s.
func TestQuietPeers(t *testing.T) {
	type step struct {
		at       float64
		in       map[peer.ID]int64
		inflight map[peer.ID]int
		answered peer.ID // a request to it ended, before due is asked
		probed   peer.ID // a ping's outcome (ok), before due is asked
		ok       bool
		giveUp   bool // what probed says
		due      []peer.ID
	}
	a, b := peer.ID("a"), peer.ID("b")
	owe := map[peer.ID]int{a: 1}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a peer that sends is not pinged", []step{
			{at: 0, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 4, in: map[peer.ID]int64{a: 20}, inflight: owe},
			{at: 8, in: map[peer.ID]int64{a: 30}, inflight: owe},
			{at: 12, in: map[peer.ID]int64{a: 40}, inflight: owe},
		}},
		{"quiet for 5 s: pinged once; an answer starts the wait again", []step{
			{at: 0, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 4.9, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 5, in: map[peer.ID]int64{a: 10}, inflight: owe, due: []peer.ID{a}},
			{at: 9, in: map[peer.ID]int64{a: 10}, inflight: owe}, // being pinged
			{at: 10, in: map[peer.ID]int64{a: 10}, inflight: owe, probed: a, ok: true},
			{at: 14.9, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 15, in: map[peer.ID]int64{a: 10}, inflight: owe, due: []peer.ID{a}},
		}},
		{"no answer and nothing sent: given up, and not pinged again", []step{
			{at: 0, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 5, in: map[peer.ID]int64{a: 10}, inflight: owe, due: []peer.ID{a}},
			{at: 15, in: map[peer.ID]int64{a: 10}, inflight: owe, probed: a, giveUp: true},
			{at: 30, in: map[peer.ID]int64{a: 10}, inflight: owe},
		}},
		{"no answer to the ping, but bytes came meanwhile: kept", []step{
			{at: 0, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 5, in: map[peer.ID]int64{a: 10}, inflight: owe, due: []peer.ID{a}},
			{at: 15, in: map[peer.ID]int64{a: 11}, inflight: owe, probed: a},
			{at: 19.9, in: map[peer.ID]int64{a: 11}, inflight: owe},
		}},
		{"a request that ends is an answer", []step{
			{at: 0, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 4, in: map[peer.ID]int64{a: 10}, inflight: owe, answered: a},
			{at: 8.9, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 9, in: map[peer.ID]int64{a: 10}, inflight: owe, due: []peer.ID{a}},
		}},
		{"watched only while it owes blocks; upstream never", []step{
			{at: 0, in: map[peer.ID]int64{a: 10, b: 5}, inflight: map[peer.ID]int{a: 0, b: 2, "": 4}},
			{at: 6, in: map[peer.ID]int64{a: 10, b: 5}, inflight: map[peer.ID]int{a: 1, b: 2, "": 4}, due: []peer.ID{b}},
			{at: 10.9, in: map[peer.ID]int64{a: 10, b: 5}, inflight: map[peer.ID]int{a: 1, b: 2, "": 4}},
			{at: 11, in: map[peer.ID]int64{a: 10, b: 5}, inflight: map[peer.ID]int{a: 1, b: 2, "": 4}, due: []peer.ID{a}},
		}},
		{"a peer that owed nothing for a while starts afresh", []step{
			{at: 0, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 3, in: map[peer.ID]int64{a: 10}, inflight: map[peer.ID]int{a: 0}},
			{at: 7, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 11.9, in: map[peer.ID]int64{a: 10}, inflight: owe},
			{at: 12, in: map[peer.ID]int64{a: 10}, inflight: owe, due: []peer.ID{a}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in map[peer.ID]int64
			q := newQuietPeers(5*time.Second, func(p peer.ID) int64 { return in[p] })
			t0 := time.Now()
			for _, s := range tt.steps {
				in = s.in
				now := t0.Add(time.Duration(s.at * float64(time.Second)))
				if s.answered != "" {
					q.answered(s.answered, now)
				}
				if s.probed != "" {
					if got := q.probed(s.probed, s.ok, now); got != s.giveUp {
						t.Errorf("at %.1f s: probed(%s, %v) = %v, want %v", s.at, s.probed, s.ok, got, s.giveUp)
					}
				}
				if got := q.due(s.inflight, now); !cmp.Equal(got, s.due) {
					t.Errorf("at %.1f s: due = %v, want %v", s.at, got, s.due)
				}
			}
		})
	}
}
