package store

import (
	"math/rand/v2"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestBase58(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := [][]byte{nil, {0}, {0, 0}, {1}, {0, 0, 1}, {255}, {0, 255, 255, 255, 255, 255}}
	for n := range 80 {
		for range 50 {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			for i := 0; i < len(b) && r.IntN(4) == 0; i++ {
				b[i] = 0 // leading zeros
			}
			cases = append(cases, b)
		}
	}
	for _, id := range []string{"12D3KooWBo2jbqf6Z27wembYghGRh6tinZmoWsyVgDWuHNXi4zv2", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"} {
		p, err := peer.Decode(id)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, []byte(p))
	}
	for _, b := range cases {
		if got, want := base58(b), peer.ID(b).String(); got != want {
			t.Fatalf("base58(%x) = %q, want %q", b, got, want)
		}
	}
}

func BenchmarkBase58(b *testing.B) {
	p, _ := peer.Decode("12D3KooWBo2jbqf6Z27wembYghGRh6tinZmoWsyVgDWuHNXi4zv2")
	b.Run("peer.ID.String", func(b *testing.B) {
		for b.Loop() {
			_ = p.String()
		}
	})
	b.Run("base58", func(b *testing.B) {
		for b.Loop() {
			_ = base58([]byte(p))
		}
	})
}
