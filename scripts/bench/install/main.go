// Command install measures an install job through a 3-level tree of real
// libp2p hosts in this process (server → relays → clients, on loopback):
// the time from submitting the signed job for a package of incompressible
// bytes to every client's "succeeded" at the server, and what the server
// handled for it — blocks sent, report batches received, manifest copies
// sent — which must grow with the number of relays, not of clients.
//
//	go run ./scripts/bench/install -relays 10 -clients 100 -size 10MiB
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/scripts/bench/benchtree"
)

func main() {
	relays := flag.Int("relays", 10, "relays under the server")
	clients := flag.Int("clients", 100, "clients under each relay")
	size := flag.Int("size", 10<<20, "package size in bytes (incompressible)")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	if *relays < 1 || *clients < 1 || *size < 1 {
		fmt.Fprintln(os.Stderr, "install: -relays, -clients and -size must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, *relays, *clients, *size); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, relays, clients, size int) error {
	dir, err := os.MkdirTemp("", "swdist-bench-install-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	t := benchtree.New(dir)
	defer t.Close()
	start := time.Now()
	server, _, err := t.Build(ctx, relays, clients)
	if err != nil {
		return err
	}
	fmt.Printf("swdist install benchmark: %d hosts in one process on loopback (1 server, %d relays, %d clients each), enrolled in %s\n",
		1+relays+relays*clients, relays, clients, time.Since(start).Round(time.Millisecond))

	// The package: incompressible bytes, built into the server's store.
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "payload.bin"), data, 0o644); err != nil {
		return err
	}
	bs, err := blocks.Open(filepath.Join(dir, "server", "blocks"))
	if err != nil {
		return err
	}
	res, err := pkg.Build(ctx, src, "payload", "1", bs, pkg.BuildOptions{})
	bs.Close()
	if err != nil {
		return err
	}
	p, err := server.AddPackage(ctx, api.Package{CID: res.Root.String()})
	if err != nil {
		return err
	}
	fmt.Printf("package:              %d bytes in %d chunks (%s)\n", p.StoredBytes, p.Chunks, p.CID)

	key, adm, err := t.Admin(ctx, server)
	if err != nil {
		return err
	}
	raw, id, err := signInstall(key, adm, p)
	if err != nil {
		return err
	}
	batches0, reports0 := server.ReportsReceived()
	gossip0 := server.GossipTraffic()
	start = time.Now()
	if _, err := server.SubmitJob(ctx, api.JobSubmit{Manifest: raw}); err != nil {
		return err
	}
	want := relays * clients
	var st api.JobStatus
	for {
		if st, err = server.JobStatus(ctx, id, false); err != nil {
			return err
		}
		if st.Counts["succeeded"] == want || st.Done {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %s: %w", time.Since(start).Round(time.Second), fmt.Sprint(st.Counts), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	took := time.Since(start)
	batches, reports := server.ReportsReceived()
	served := server.BlocksServed()
	sent := 0
	for _, n := range served {
		sent += n
	}
	g := server.GossipTraffic()
	fmt.Printf("all succeeded:        %d of %d clients in %s (submit to the server's status saying so)\n", st.Counts["succeeded"], want, took.Round(time.Millisecond))
	if st.Counts["succeeded"] != want {
		fmt.Printf("states:               %v\n", st.Counts)
		for i, f := range st.Failed {
			if i == 5 {
				fmt.Printf("                      … and %d more\n", len(st.Failed)-i)
				break
			}
			fmt.Printf("failed:               %s: %s\n", f.PeerID, f.Reason)
		}
	}
	fmt.Printf("server, blocks sent:  %d to %d peers (%d blocks a copy: %.2f copies of the package)\n", sent, len(served), p.Chunks+1, float64(sent)/float64(p.Chunks+1))
	fmt.Printf("server, reports:      %d reports in %d batches received (%.1f reports a batch)\n", reports-reports0, batches-batches0,
		float64(reports-reports0)/float64(max(1, batches-batches0)))
	fmt.Printf("server, manifests:    %d copies sent\n", g.Sent-gossip0.Sent)
	msgs := float64(sent)/pkgWantPerRequest + float64(batches-batches0) + float64(g.Sent-gossip0.Sent)
	fmt.Printf("messages:             about %.0f block requests, report batches and manifest copies at the server: %.3f per client\n",
		msgs, msgs/float64(want))
	return nil
}

// pkgWantPerRequest is how many blocks one request asks for.
const pkgWantPerRequest = 64

// signInstall signs an install job of p for every client.
func signInstall(key crypto.PrivKey, adm admin.Signed, p api.Package) ([]byte, string, error) {
	sel, err := gossip.ParseSelector([]string{"role=client"})
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	m := gossip.Manifest{JobID: gossip.NewJobID(), Seq: 1, CreatedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Hour),
		Type: "install", Target: sel, Package: &gossip.Package{CID: p.CID, Size: p.StoredBytes},
		Params: map[string]string{"name": p.Name, "version": p.Version}}
	s, err := gossip.Sign(m, key, adm)
	if err != nil {
		return nil, "", err
	}
	raw, err := gossip.Encode(s)
	return raw, m.JobID, err
}
