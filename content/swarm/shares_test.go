package swarm_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/swdist/swdist/content/swarm"
)

// TestSharesEven: a package of chunks of the chunker's sizes (128 to 512
// KiB) is shared among 2, 3 and 5 members to within a fraction of the
// smallest chunk, not within the largest (as in turns alone), and every
// member computes the same owners whichever it is.
func TestSharesEven(t *testing.T) {
	const spread = 64 << 10 // each share crosses its owner's uplink once per peer
	for _, members := range []int{2, 3, 5} {
		t.Run(fmt.Sprint(members, " members"), func(t *testing.T) {
			var ids []peer.ID
			for j := range members {
				ids = append(ids, peer.ID(fmt.Sprint("peer-", j)))
			}
			for seed := range 50 {
				blocks, sizes := randomPackage(t, uint64(seed), 254)
				shares := swarm.Shares(blocks, sizes, ids[0], ids[1:])
				load := map[peer.ID]uint64{}
				for i, c := range blocks {
					o, ok := shares[c.KeyString()]
					if !ok || !slices.Contains(ids, o) {
						t.Fatalf("seed %d: block %d has owner %q, not one of the members", seed, i, o)
					}
					load[o] += sizes[i]
				}
				lo, hi := ^uint64(0), uint64(0)
				for _, p := range ids {
					lo, hi = min(lo, load[p]), max(hi, load[p])
				}
				if hi-lo > spread {
					t.Errorf("seed %d: shares from %d to %d bytes, %d apart: more than %d", seed, lo, hi, hi-lo, spread)
				}
				// Another member, with the others as its peers, in another order.
				last, others := ids[members-1], slices.Clone(ids[:members-1])
				rand.New(rand.NewPCG(uint64(seed), 2)).Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
				if diff := cmp.Diff(shares, swarm.Shares(blocks, sizes, last, others)); diff != "" {
					t.Fatalf("seed %d: another member computes other owners (-first +other):\n%s", seed, diff)
				}
			}
		})
	}
}

// randomPackage is n blocks of random CIDs and sizes from 128 to 512 KiB.
func randomPackage(t *testing.T, seed uint64, n int) ([]cid.Cid, []uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	var blocks []cid.Cid
	var sizes []uint64
	for i := range n {
		h, err := mh.Sum(fmt.Appendf(nil, "%d/%d", seed, i), mh.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, cid.NewCidV1(cid.Raw, h))
		sizes = append(sizes, uint64(128<<10+r.IntN(384<<10+1)))
	}
	return blocks, sizes
}
