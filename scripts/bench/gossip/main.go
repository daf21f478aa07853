// Command gossip measures how fast a signed manifest reaches every targeted
// node of a 3-level tree (server → relays → clients, each a real libp2p host
// on loopback in this process), how many copies each node receives, and how
// fast clients that were offline during the send catch up when they return.
//
//	go run ./scripts/bench/gossip -relays 10 -clients 99
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/scripts/bench/benchtree"
)

func main() {
	relays := flag.Int("relays", 10, "relays under the server")
	clients := flag.Int("clients", 99, "clients under each relay")
	offline := flag.Float64("offline", 0.10, "share of clients offline during the second send")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the first send (all online) to this file")
	flag.Parse()
	profile = *cpuprofile
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, *relays, *clients, *offline); err != nil {
		fmt.Fprintln(os.Stderr, "gossip:", err)
		os.Exit(1)
	}
}

// bench holds the tree and when each node accepted each job.
type bench struct {
	*benchtree.Tree
	mu  sync.Mutex
	got map[string]map[string]time.Time // job → node name → when accepted
}

func (b *bench) accepted(name, job string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got[job] == nil {
		b.got[job] = map[string]time.Time{}
	}
	b.got[job][name] = time.Now()
}

// traffic counts, for each node, the copies received and sent on the wire.
func (b *bench) traffic() map[string]gossip.Traffic {
	out := map[string]gossip.Traffic{}
	for name, n := range b.Nodes() {
		out[name] = n.GossipTraffic()
	}
	return out
}

func (b *bench) waitFor(ctx context.Context, job string, names []string) error {
	for {
		b.mu.Lock()
		n := 0
		for _, name := range names {
			if _, ok := b.got[job][name]; ok {
				n++
			}
		}
		b.mu.Unlock()
		if n == len(names) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d nodes got job %s: %w", n, len(names), job, ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

func run(ctx context.Context, relays, clients int, offlineShare float64) error {
	dir, err := os.MkdirTemp("", "swdist-bench-gossip-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{Tree: benchtree.New(dir), got: map[string]map[string]time.Time{}}
	b.OnManifest = b.accepted
	defer b.Close()
	start := time.Now()
	server, clientNames, err := b.Build(ctx, relays, clients)
	if err != nil {
		return err
	}
	total := 1 + relays + relays*clients
	fmt.Printf("swdist gossip benchmark: %d hosts in one process on loopback (1 server, %d relays, %d clients each), enrolled in %s\n",
		total, relays, clients, time.Since(start).Round(time.Millisecond))

	key, admCert, err := b.Admin(ctx, server)
	if err != nil {
		return err
	}
	send := func(seq uint64) (string, time.Time, error) {
		sel, _ := gossip.ParseSelector([]string{"role=client"})
		now := time.Now()
		// Not before an hour from now: the clients hold the job and report
		// it scheduled, and none runs it while the others are still
		// receiving it (990 processes started at once would time the
		// machine, not the delivery).
		s, err := gossip.Sign(gossip.Manifest{JobID: gossip.NewJobID(), Seq: seq, CreatedAt: now, NotBefore: now.Add(time.Hour),
			ExpiresAt: now.Add(2 * time.Hour), Type: "run", Params: map[string]string{"command": "true"}, Target: sel}, key, admCert)
		if err != nil {
			return "", now, err
		}
		raw, _ := gossip.Encode(s)
		res, err := server.SubmitJob(ctx, api.JobSubmit{Manifest: raw})
		return res.ID, now, err
	}

	// 1. Everyone online.
	before := b.traffic()
	stopProfile := startProfile()
	job, signed, err := send(1)
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	err = b.waitFor(wctx, job, clientNames)
	wcancel()
	stopProfile()
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // late duplicates
	var lat []time.Duration
	b.mu.Lock()
	for _, at := range b.got[job] {
		lat = append(lat, at.Sub(signed))
	}
	b.mu.Unlock()
	after := b.traffic()
	var maxRecv, sumRecv, maxSent, sumSent int64
	var maxSender string
	for name, n := range after {
		r, s := n.Received-before[name].Received, n.Sent-before[name].Sent
		sumRecv += r
		maxRecv = max(maxRecv, r)
		sumSent += s
		if s > maxSent {
			maxSent, maxSender = s, name
		}
	}
	fmt.Printf("all online:          %d targeted clients; signing to delivery p50 %s, p99 %s, max %s (target p99 <= 1 s)\n",
		len(lat), pct(lat, 0.5).Round(time.Millisecond), pct(lat, 0.99).Round(time.Millisecond), slices.Max(lat).Round(time.Millisecond))
	fmt.Printf("copies received:     at most %d per node, %.2f on average over %d nodes (target <= 3)\n",
		maxRecv, float64(sumRecv)/float64(len(after)-1), len(after)-1)
	fmt.Printf("copies sent:         %d in all, %.2f per node on average, at most %d (by %s: one per child)\n",
		sumSent, float64(sumSent)/float64(len(after)), maxSent, maxSender)

	// 2. A share of the clients offline during the send, then back.
	off := slices.Clone(clientNames)
	rand.Shuffle(len(off), func(i, j int) { off[i], off[j] = off[j], off[i] })
	off = off[:int(float64(len(off))*offlineShare)]
	for _, name := range off {
		if err := b.Stop(name); err != nil {
			return err
		}
	}
	job2, _, err := send(2)
	if err != nil {
		return err
	}
	var online []string
	for _, name := range clientNames {
		if !slices.Contains(off, name) {
			online = append(online, name)
		}
	}
	wctx, wcancel = context.WithTimeout(ctx, 60*time.Second)
	err = b.waitFor(wctx, job2, online)
	wcancel()
	if err != nil {
		return err
	}
	back := map[string]time.Time{}
	for _, name := range off {
		back[name] = time.Now()
		if _, err := b.Open(ctx, name); err != nil {
			return err
		}
	}
	wctx, wcancel = context.WithTimeout(ctx, 60*time.Second)
	err = b.waitFor(wctx, job2, off)
	wcancel()
	if err != nil {
		return err
	}
	var catch []time.Duration
	b.mu.Lock()
	for _, name := range off {
		catch = append(catch, b.got[job2][name].Sub(back[name]))
	}
	b.mu.Unlock()
	fmt.Printf("offline during send: %d clients (%.0f%%); from restart to holding the job p50 %s, p99 %s, max %s (target <= 5 s)\n",
		len(off), offlineShare*100, pct(catch, 0.5).Round(time.Millisecond), pct(catch, 0.99).Round(time.Millisecond), slices.Max(catch).Round(time.Millisecond))
	return nil
}

// profile, if set, is where the first send's CPU profile goes.
var profile string

func startProfile() (stop func()) {
	if profile == "" {
		return func() {}
	}
	f, err := os.Create(profile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gossip: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "gossip: cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
