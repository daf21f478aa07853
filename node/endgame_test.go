package node

import "testing"

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
