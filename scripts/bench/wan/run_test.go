package main

import (
	"math"
	"testing"
)

func TestLowerBound(t *testing.T) {
	const mib64 = 64 << 20
	tests := []struct {
		name        string
		o           options
		lb, limited float64 // seconds
	}{
		// 3·F over 50 + 3·20 Mbit/s; under 1.1 F from the server the
		// sites carry 1.9·F over 3·20.
		{"three sites", options{sites: 3, r: rates{serverUp: 50, siteUp: 20, lan: 1000}}, 3 * mib64 * 8 / 110e6, 1.9 * mib64 * 8 / 60e6},
		// One site: the server's link alone bounds it, and its 1.1 F is
		// more than the site needs.
		{"one site", options{sites: 1, r: rates{serverUp: 50, siteUp: 20, lan: 1000}}, mib64 * 8 / 50e6, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.clients = 5
			b := lowerBound(tc.o, mib64)
			if math.Abs(b.lb-tc.lb) > 1e-9 || math.Abs(b.limitTerm-tc.limited) > 1e-9 {
				t.Errorf("bound %.3f s, under the server's limit %.3f s; want %.3f, %.3f", b.lb, b.limitTerm, tc.lb, tc.limited)
			}
		})
	}
}
