package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node/store/storetest"
)

// BenchmarkApplyReports measures status ingestion at a managing node: a
// 100,000-destination job's "succeeded" reports applied in batches of
// 1,000 (the pump's batch size) into a real SQLite file, and into
// PostgreSQL when one answers (see storetest), as relays deliver them: from
// one relay, batch after batch, and from ten relays at once (whose batches
// the store commits together). It reports reports/s until the last batch
// is acknowledged, and until the job's status is read back from
// job_states.
//
//	go test ./node/store -run '^$' -bench ApplyReports -benchtime 3x
func BenchmarkApplyReports(b *testing.B) {
	origins := make([]peer.ID, 100_000)
	for i := range origins {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			b.Fatal(err)
		}
		origins[i], _ = peer.IDFromPrivateKey(k)
	}
	for _, backend := range storetest.Backends {
		for _, relays := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/relays=%d", backend.Name, relays), func(b *testing.B) {
				benchApply(b, backend.New, origins, relays)
			})
		}
	}
}

func benchApply(b *testing.B, newDB func(testing.TB) string, origins []peer.ID, relays int) {
	const destinations, batchSize = 100_000, 1000
	ctx := context.Background()
	for n := range b.N {
		b.StopTimer()
		s, err := Open(ctx, newDB(b))
		if err != nil {
			b.Fatal(err)
		}
		job := fmt.Sprintf("%032x", n)
		// Relay r delivers the batches r, r+relays, ...
		perRelay := make([][][]report.Report, relays)
		for i := 0; i < destinations; i += batchSize {
			batch := make([]report.Report, batchSize)
			for j := range batch {
				d := i + j
				body, _ := cert.Marshal(JobState{Job: job, State: "succeeded"})
				batch[j] = report.Report{ID: fmt.Sprintf("%s/%d/succeeded", job, d), Origin: origins[d], Kind: KindJobStatus,
					At: time.Now().UnixMilli(), Body: body}
			}
			r := (i / batchSize) % relays
			perRelay[r] = append(perRelay[r], batch)
		}
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, relays)
		for r := range relays {
			wg.Add(1)
			go func() {
				defer wg.Done()
				via := origins[r]
				for _, batch := range perRelay[r] {
					if err := s.Apply(ctx, via, batch, false); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		acked := time.Since(start)
		// Reading the status writes what is still in memory to
		// job_states: counted too.
		states, err := s.JobStates(ctx, job)
		if err != nil || len(states) != destinations {
			b.Fatalf("%d destinations stored (%v), want %d", len(states), err, destinations)
		}
		b.ReportMetric(float64(destinations)/acked.Seconds(), "reports/s")
		b.ReportMetric(float64(destinations)/time.Since(start).Seconds(), "reports/s-read-back")
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}
