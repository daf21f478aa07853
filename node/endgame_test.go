package node

import (
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

func TestEndgameLimit(t *testing.T) {
	const total = 300 << 20 // bytes; 3 members: 100 MiB each
	part := uint64(float64(total) * endgameShare / 3)
	upCap := uint64(float64(total) * (1 + endgameShare) / 3)
	tests := []struct {
		name      string
		fraction  float64
		spent, up uint64
		want      uint64
	}{
		{"half the budget, own share only", 0.5, 0, total / 3, part / 2},
		{"the whole budget, half spent", 1, part / 2, total/3 + part/2, part},
		{"a share grown by less than the budget leaves the rest", 1, 0, total/3 + part/4, upCap - (total/3 + part/4)},
		{"a share grown by the whole budget leaves nothing", 1, 0, upCap, 0},
		{"a share grown beyond it leaves nothing, not less than nothing", 1, 0, upCap + 10<<20, 0},
		{"what was spent stays spent", 1, part / 2, upCap + 1, part / 2},
		{"half the budget when all of it is spent: under what was spent, so nothing more", 0.5, part, total / 3, part / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := endgameLimit(total, 3, tc.fraction, tc.spent, tc.up); got != tc.want {
				t.Errorf("endgameLimit(fraction %v, spent %d, up %d) = %d, want %d", tc.fraction, tc.spent, tc.up, got, tc.want)
			}
		})
	}
}

func TestEndgameQueue(t *testing.T) {
	c := func(s string) cid.Cid {
		h, err := mh.Sum([]byte(s), mh.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, h)
	}
	a1, up1, b1, a2, up2, b2 := c("a1"), c("up1"), c("b1"), c("a2"), c("up2"), c("b2")
	from := map[cid.Cid]peer.ID{a1: "a", a2: "a", b1: "b", b2: "b"}
	sizeOf := map[string]uint64{a1.KeyString(): 1, a2.KeyString(): 2, b1.KeyString(): 4, b2.KeyString(): 8,
		up1.KeyString(): 16, up2.KeyString(): 32}
	// up2 was asked of upstream once and is queued again (upstream
	// lacked it): it is in what was asked already, not counted twice.
	upAsked := map[string]bool{up2.KeyString(): true}
	left, up := endgameQueue([]cid.Cid{a1, up1, b1, a2, up2, b2}, func(c cid.Cid) peer.ID { return from[c] }, upAsked, sizeOf)
	want := map[peer.ID][]string{"a": {a1.KeyString(), a2.KeyString()}, "b": {b1.KeyString(), b2.KeyString()}}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("blocks left by peer (-want +got):\n%s", diff)
	}
	if up != 16 {
		t.Errorf("bytes to come from upstream not asked yet = %d, want 16 (up1 only)", up)
	}
}

func TestEndgamePick(t *testing.T) {
	// Blocks are named by their peer and place in the queue; sizes in
	// units.
	sizeOf := map[string]uint64{"a1": 1, "a2": 1, "a3": 1, "a4": 1, "b1": 1, "b2": 1, "big": 5}
	peers := []peer.ID{"a", "b"}
	tests := []struct {
		name string
		left map[peer.ID][]string
		due  map[peer.ID]uint64
		room uint64
		want []string
	}{
		{"the last blocks of the peer with the most left, from the end",
			map[peer.ID][]string{"a": {"a1", "a2", "a3", "a4"}, "b": {"b1", "b2"}}, map[peer.ID]uint64{"a": 10, "b": 4}, 2,
			[]string{"a4", "a3"}},
		{"each time of the one with the most left then, so they even out",
			map[peer.ID][]string{"a": {"a1", "a2", "a3", "a4"}, "b": {"b1", "b2"}}, map[peer.ID]uint64{"a": 5, "b": 4}, 3,
			[]string{"a4", "a3", "b2"}}, // a 4, b 4 after a4: the tie goes to the first peer, then b at 4 against 3
		{"nothing more once the peer with the most left has none queued, though room is left",
			map[peer.ID][]string{"a": {"a1"}, "b": {"b1", "b2"}}, map[peer.ID]uint64{"a": 10, "b": 4}, 4,
			[]string{"a1"}},
		{"its due counts what the others wait for too: the peer with fewer queued blocks can be the slow one",
			map[peer.ID][]string{"a": {"a1", "a2", "a3"}, "b": {"b1"}}, map[peer.ID]uint64{"a": 3, "b": 9}, 3,
			[]string{"b1"}},
		{"stops at a block that does not fit, rather than take a smaller one of another's",
			map[peer.ID][]string{"a": {"a1", "big"}, "b": {"b1", "b2"}}, map[peer.ID]uint64{"a": 10, "b": 4}, 4,
			nil},
		{"no room, nothing", map[peer.ID][]string{"a": {"a1"}}, map[peer.ID]uint64{"a": 1}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			left := maps.Clone(tc.left)
			due := maps.Clone(tc.due)
			got := endgamePick(peers, left, due, sizeOf, tc.room)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("blocks taken (-want +got):\n%s", diff)
			}
			if !cmp.Equal(left, tc.left) || !cmp.Equal(due, tc.due) {
				t.Errorf("endgamePick changed its arguments: left %v, due %v", left, due)
			}
		})
	}
}
