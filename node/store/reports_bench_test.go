package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
)

// BenchmarkApplyReports measures status ingestion at a managing node: a
// 100,000-destination job's "succeeded" reports applied in batches of
// 1,000 (the pump's batch size) into a real SQLite file, as relays deliver
// them. It reports reports/s.
//
//	go test ./node/store -run '^$' -bench ApplyReports -benchtime 3x
func BenchmarkApplyReports(b *testing.B) {
	const destinations, batchSize = 100_000, 1000
	ctx := context.Background()
	origins := make([]peer.ID, destinations)
	for i := range origins {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			b.Fatal(err)
		}
		origins[i], _ = peer.IDFromPrivateKey(k)
	}
	via := origins[0]
	b.ResetTimer()
	for n := range b.N {
		b.StopTimer()
		s, err := Open(ctx, filepath.Join(b.TempDir(), "swdist.db"))
		if err != nil {
			b.Fatal(err)
		}
		job := fmt.Sprintf("%032x", n)
		batches := make([][]report.Report, 0, destinations/batchSize)
		for i := 0; i < destinations; i += batchSize {
			batch := make([]report.Report, batchSize)
			for j := range batch {
				d := i + j
				origin := origins[d]
				body, _ := cert.Marshal(JobState{Job: job, State: "succeeded"})
				batch[j] = report.Report{ID: fmt.Sprintf("%s/%d/succeeded", job, d), Origin: origin, Kind: KindJobStatus,
					At: time.Now().UnixMilli(), Body: body}
			}
			batches = append(batches, batch)
		}
		b.StartTimer()
		start := time.Now()
		for _, batch := range batches {
			if err := s.Apply(ctx, via, batch, false); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(destinations)/time.Since(start).Seconds(), "reports/s")
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}
