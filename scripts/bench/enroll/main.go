// Command enroll measures one relay holding many children: a server, a relay
// under it and N clients under the relay, every one a real libp2p host on
// loopback in this process, each enrolled with a real one-time token. It
// prints the time to enroll them and to see them online, the memory and
// goroutines each client costs, the relay's connections, and whether the
// relay still holds them all after the connection manager's grace period
// (nothing trimmed).
//
//	go run ./scripts/bench/enroll -n 1000          # clients on TCP only
//	go run ./scripts/bench/enroll -n 1000 -quic    # TCP and QUIC listeners
//	go run ./scripts/bench/enroll -n 100 -idle 5s  # a quick check
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
	"github.com/swdist/swdist/node/inventory"
)

type flags struct {
	n, conc       int
	idle, timeout time.Duration
	quic          bool
	bin, profile  string
	logFile       string
}

func main() {
	var f flags
	flag.IntVar(&f.n, "n", 1000, "clients under the relay")
	flag.IntVar(&f.conc, "concurrency", 32, "enrollments at once")
	flag.DurationVar(&f.idle, "idle", 70*time.Second, "idle time before checking nothing was trimmed (the connection manager's grace period is 1 minute)")
	flag.DurationVar(&f.timeout, "timeout", 10*time.Minute, "give up after this long (enrollment, coming online and idling together)")
	flag.BoolVar(&f.quic, "quic", false, "every node listens on QUIC as well as TCP (default: TCP only)")
	flag.StringVar(&f.bin, "swdist", "", "path to a built swdist binary: run the server and relay as separate processes, to measure the relay's own memory")
	flag.StringVar(&f.logFile, "log", "", "write the nodes' logs (info and above) to this file (default: discarded)")
	flag.StringVar(&f.profile, "profile", "", "directory to write goroutine and heap profiles to once the clients are idle (read with 'go tool pprof -top')")
	flag.Parse()
	if f.n < 1 || f.conc < 1 {
		fmt.Fprintln(os.Stderr, "enroll: -n and -concurrency must be at least 1")
		os.Exit(2)
	}
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-sig.Done(); stop() }() // a second Ctrl-C kills at once
	ctx, cancel := context.WithTimeout(sig, f.timeout)
	err := run(ctx, f)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "enroll:", err)
		os.Exit(1)
	}
}

type sample struct {
	heap, stack, rss uint64 // HeapInuse, StackInuse, VmRSS
	goroutines       int
}

// measure is the heap in use and the goroutines, after two collections.
func measure() sample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{heap: ms.HeapInuse, stack: ms.StackInuse, rss: rssBytes(), goroutines: runtime.NumGoroutine()}
}

func mib(b float64) string { return fmt.Sprintf("%.2f MiB", b/(1<<20)) }

// connStats is what the relay holds.
type connStats struct {
	conns, peers   int // libp2p connections and connected peers (-1: unknown)
	tcp, quic      int // connections by transport
	verified       int // peers that passed the hello (children and the parent)
	childrenConned int // of the benchmark's clients, how many the relay is connected to
}

// parent is where the clients enroll: a relay in this process, or one run
// as a separate 'swdist run' process.
type parent interface {
	token(ctx context.Context) (string, error)
	tree(ctx context.Context) (tree.Node, error)
	conns(ctx context.Context, children map[peer.ID]bool) connStats
	memory() string
}

type inProcess struct{ n *node.Node }

func (p inProcess) token(ctx context.Context) (string, error) {
	t, err := p.n.CreateToken(ctx, api.TokenRequest{Role: "client", Site: "a"})
	return t.Token, err
}

func (p inProcess) tree(ctx context.Context) (tree.Node, error) { return p.n.Tree(ctx, 1) }

func (p inProcess) conns(ctx context.Context, children map[peer.ID]bool) connStats {
	nw := p.n.Host().Network()
	var s connStats
	for _, c := range nw.Conns() {
		s.conns++
		if isQUIC(c.RemoteMultiaddr()) {
			s.quic++
		} else {
			s.tcp++
		}
	}
	s.peers = len(nw.Peers())
	if peers, err := p.n.Peers(ctx); err == nil {
		s.verified = len(peers)
	}
	for id := range children {
		if nw.Connectedness(id) == network.Connected {
			s.childrenConned++
		}
	}
	return s
}

func (p inProcess) memory() string { return "in this process (see the heap lines)" }

func isQUIC(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_QUIC_V1)
	return err == nil
}

func run(ctx context.Context, f flags) (err error) {
	n := f.n
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if need := uint64(4*n + 100); lim.Cur < need {
		return fmt.Errorf("open-file limit (ulimit -n) is %d but %d clients in one process need at least %d: raise it with 'ulimit -n %d' (hard limit %d)",
			lim.Cur, n, need, need, lim.Max)
	}
	dir, err := os.MkdirTemp("", "swdist-bench-enroll-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var logTo io.Writer = io.Discard
	logLevel := slog.LevelError
	if f.logFile != "" {
		lf, err := os.Create(f.logFile)
		if err != nil {
			return err
		}
		defer lf.Close()
		logTo, logLevel = lf, slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: logLevel}))
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	transports := "TCP only (no QUIC listeners; -quic adds them)"
	if f.quic {
		listen = append(listen, "/ip4/127.0.0.1/udp/0/quic-v1")
		transports = "TCP and QUIC listeners on every node (libp2p picks the transport per dial)"
	}

	// Every node opened is closed on the way out, whatever happens:
	// clients first (in parallel), then the relay, then the server.
	var (
		mu             sync.Mutex
		clients        []*node.Node
		server, relayN *node.Node
	)
	var relay parent
	base := measure()
	defer func() {
		cs, r, sv := clients, relayN, server
		clients, relayN, server, relay = nil, nil, nil, nil // let the heap figure after closing show leaks
		cerr := closeAll(cs, r, sv, base, f.profile)
		if err == nil {
			err = cerr
		}
	}()
	// Nodes live until closeAll closes them, not until ctx ends: a timeout
	// or Ctrl-C stops enrolling (tokens and joins use ctx) and the deferred
	// close does the rest. It also keeps a cancellation from failing
	// node.Open half-way, whose cleanup panics on services it has not
	// built yet (Node.Close calls viewer.Close and revoker.Close on nil).
	nodeCtx := context.WithoutCancel(ctx)
	open := func(h home.Home) (*node.Node, error) {
		nd, err := node.Open(nodeCtx, h, node.Options{NoAPI: true, Logger: log.With("node", filepath.Base(h.Dir)),
			// Thousands of machines in one process: no real inventory each.
			InventoryCollectors: []inventory.Collector{}})
		if err != nil {
			return nil, err
		}
		if err := nd.Start(nodeCtx); err != nil {
			nd.Close()
			return nil, err
		}
		return nd, nil
	}

	where := "all in one process"
	if f.bin != "" {
		pr, err := startProcesses(ctx, f.bin, dir, listen)
		if err != nil {
			return err
		}
		defer pr.stop()
		relay, where = pr, "server and relay as separate processes, clients in this one"
	} else {
		if _, err := node.Init(home.Home{Dir: filepath.Join(dir, "server")}, node.InitOptions{Role: cert.RoleServer, Site: "hq", Listen: listen}); err != nil {
			return err
		}
		if server, err = open(home.Home{Dir: filepath.Join(dir, "server")}); err != nil {
			return fmt.Errorf("open server: %w", err)
		}
		tok, err := server.CreateToken(ctx, api.TokenRequest{Role: "relay", Site: "a"})
		if err != nil {
			return err
		}
		h := home.Home{Dir: filepath.Join(dir, "relay")}
		if _, err := node.Join(ctx, h, node.JoinOptions{Token: tok.Token, Listen: listen}); err != nil {
			return fmt.Errorf("join relay: %w", err)
		}
		if relayN, err = open(h); err != nil {
			return fmt.Errorf("open relay: %w", err)
		}
		relay = inProcess{relayN}
	}
	withRelay := measure()

	fmt.Printf("swdist enroll benchmark: 1 server, 1 relay, %d clients under the relay on loopback, %s\n", n, where)
	fmt.Printf("transport:            %s\n", transports)
	fmt.Printf("open-file limit:      %d (need >= %d)\n", lim.Cur, 4*n+100)

	// Enroll: a token from the relay, node.Join, node.Open, Start; at most
	// conc at once; the first error stops the rest.
	children := map[peer.ID]bool{}
	var joinTimes []time.Duration
	jctx, jcancel := context.WithCancel(ctx)
	defer jcancel()
	var firstErr error
	var errOnce sync.Once
	join := func(name string) error {
		tok, err := relay.token(jctx)
		if err != nil {
			return fmt.Errorf("token for %s: %w", name, err)
		}
		h := home.Home{Dir: filepath.Join(dir, name)}
		t0 := time.Now()
		c, err := node.Join(jctx, h, node.JoinOptions{Token: tok, Listen: listen})
		if err != nil {
			return fmt.Errorf("join %s: %w", name, err)
		}
		took := time.Since(t0)
		nd, err := open(h)
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		mu.Lock()
		clients = append(clients, nd)
		children[c.PeerID] = true
		joinTimes = append(joinTimes, took)
		mu.Unlock()
		return nil
	}
	start := time.Now()
	prog := watchOnline(ctx, relay, n, start)
	defer prog.stop()
	sem := make(chan struct{}, f.conc)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		if jctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := join(fmt.Sprintf("c%05d", i)); err != nil {
				errOnce.Do(func() { firstErr = err; jcancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("enroll (%d of %d done): %w", len(clients), n, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("enroll (%d of %d done): %w", len(clients), n, err)
	}
	enrolled := time.Since(start)
	slices.Sort(joinTimes)
	pct := func(p float64) time.Duration {
		return joinTimes[int(p*float64(len(joinTimes)-1))].Round(time.Millisecond)
	}
	fmt.Printf("enrolled:             %d clients in %s (%.0f/s, %d at once; each: token, join, open, start)\n",
		n, enrolled.Round(time.Millisecond), float64(n)/enrolled.Seconds(), f.conc)
	fmt.Printf("join latency:         p50 %s, p90 %s, p99 %s, max %s (node.Join alone)\n", pct(0.5), pct(0.9), pct(0.99), pct(1))

	online := func() (int, error) {
		t, err := relay.tree(ctx)
		if err != nil {
			return 0, err
		}
		return countOnline(t), nil
	}
	for {
		got, err := online()
		if err != nil {
			return err
		}
		if got == n {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d children online in the relay's view: %w", got, n, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	allOnline := time.Since(start)
	prog.stop()
	fmt.Printf("all online:           %s after the first enrollment began, %s after the last finished (relay's Tree view, depth 1)\n",
		allOnline.Round(time.Millisecond), (allOnline - enrolled).Round(time.Millisecond))
	fmt.Printf("online progress:      %s (polled every 200 ms from the first enrollment)\n", prog.String(enrolled))

	if err := sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	idle := measure()
	if f.profile != "" {
		if err := writeProfiles(f.profile); err != nil {
			return err
		}
	}
	side := "includes the relay's side of each connection, all hosts share this process"
	if f.bin != "" {
		side = "the clients alone: server and relay are other processes"
	}
	fmt.Printf("heap before nodes:    %s (HeapInuse after GC)\n", mib(float64(base.heap)))
	fmt.Printf("heap server+relay:    %s\n", mib(float64(withRelay.heap)))
	fmt.Printf("heap idle clients:    %s (%d clients)\n", mib(float64(idle.heap)), n)
	fmt.Printf("heap per client:      %s (%s; target <= 4 MiB)\n", mib(float64(idle.heap-withRelay.heap)/float64(n)), side)
	fmt.Printf("stacks per client:    %s (StackInuse: %s with server and relay, %s with clients; not part of the heap figures)\n",
		mib(float64(idle.stack-withRelay.stack)/float64(n)), mib(float64(withRelay.stack)), mib(float64(idle.stack)))
	fmt.Printf("RSS per client:       %s (VmRSS %s before any node, %s with server and relay, %s with clients: heap, stacks, SQLite's own allocator, runtime)\n",
		mib(float64(idle.rss-withRelay.rss)/float64(n)), mib(float64(base.rss)), mib(float64(withRelay.rss)), mib(float64(idle.rss)))
	fmt.Printf("goroutines before:    %d\n", base.goroutines)
	fmt.Printf("goroutines srv+relay: %d\n", withRelay.goroutines)
	fmt.Printf("goroutines clients:   %d\n", idle.goroutines)
	fmt.Printf("goroutines/client:    %.1f (%s; target <= 100)\n", float64(idle.goroutines-withRelay.goroutines)/float64(n), side)
	printConns("relay now:           ", relay.conns(ctx, children), n)
	fmt.Printf("relay memory:         %s\n", relay.memory())

	if f.idle > time.Minute {
		fmt.Printf("idling:               %s (past the connection manager's 1 minute grace period)\n", f.idle)
	} else {
		fmt.Printf("idling:               %s (shorter than the connection manager's 1 minute grace period: 'trimmed' below proves little)\n", f.idle)
	}
	if err := sleep(ctx, f.idle); err != nil {
		return err
	}
	got, err := online()
	if err != nil {
		return err
	}
	after := relay.conns(ctx, children)
	printConns("relay after idle:    ", after, n)
	fmt.Printf("online after idle:    %d of %d children in the relay's view\n", got, n)
	missing := n - min(got, after.childrenConned)
	if missing == 0 {
		fmt.Printf("trimmed:              0\n")
	} else {
		fmt.Printf("trimmed:              %d missing (%d offline in the view, %d without a connection)\n", missing, n-got, n-after.childrenConned)
	}
	fmt.Printf("relay memory:         %s\n", relay.memory())
	fmt.Printf("process RSS:          %s (VmRSS, every host in this process)\n", rss("self"))
	if missing != 0 {
		return fmt.Errorf("the relay lost %d children while idle", missing)
	}
	return nil
}

// progress records when the relay's view first showed each share of the
// children online.
type progress struct {
	shares []float64
	at     []time.Duration // -1: not yet
	atEnd  int             // online when enrollment finished (-1: unknown)
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func watchOnline(ctx context.Context, relay parent, n int, start time.Time) *progress {
	ctx, cancel := context.WithCancel(ctx)
	p := &progress{shares: []float64{0.5, 0.9, 0.99, 1}, cancel: cancel, done: make(chan struct{}), atEnd: -1}
	p.at = []time.Duration{-1, -1, -1, -1}
	go func() {
		defer close(p.done)
		for {
			if t, err := relay.tree(ctx); err == nil {
				got, now := countOnline(t), time.Since(start)
				p.mu.Lock()
				for i, sh := range p.shares {
					if p.at[i] < 0 && float64(got) >= sh*float64(n) {
						p.at[i] = now
					}
				}
				p.mu.Unlock()
			}
			if sleep(ctx, 200*time.Millisecond) != nil {
				return
			}
		}
	}()
	return p
}

func (p *progress) stop() { p.cancel(); <-p.done }

func (p *progress) String(enrolled time.Duration) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for i, sh := range p.shares {
		v := "-"
		if p.at[i] >= 0 {
			v = p.at[i].Round(100 * time.Millisecond).String()
			if p.at[i] > enrolled {
				v += " (after enrollment)"
			}
		}
		parts = append(parts, fmt.Sprintf("%g%% at %s", 100*sh, v))
	}
	return strings.Join(parts, ", ")
}

func printConns(label string, s connStats, n int) {
	conns := fmt.Sprintf("%d connections (%d TCP, %d QUIC)", s.conns, s.tcp, s.quic)
	if s.tcp < 0 {
		conns = fmt.Sprintf("%d connections", s.conns)
	}
	fmt.Printf("%s %s, %d peers connected, %d verified peers, %d of %d children connected\n",
		label, conns, s.peers, s.verified, s.childrenConned, n)
}

// closeAll closes the clients (64 at once), then the relay, then the
// server; it reports the goroutines left once all are closed, and gives
// up with a goroutine dump if closing hangs.
func closeAll(clients []*node.Node, relay, server *node.Node, base sample, profile string) error {
	if len(clients) == 0 && relay == nil && server == nil {
		return nil
	}
	t0 := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sem := make(chan struct{}, 64)
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer wg.Done(); c.Close(); <-sem }()
		}
		wg.Wait()
		clear(clients)
		for _, nd := range []*node.Node{relay, server} {
			if nd != nil {
				nd.Close()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		return errors.New("closing the nodes took over 2 minutes (goroutines dumped above)")
	}
	took := time.Since(t0)
	count := len(clients) + btoi(relay != nil) + btoi(server != nil)
	clients, relay, server = nil, nil, nil
	// Host shutdown finishes in the background for a moment, and a closed
	// node stays reachable from runtime timers for a few seconds more (about
	// 6 s here): wait up to 20 s for the heap to come back near where it was
	// before any node, so that what is left shows a leak, not a lag. The
	// runtime never frees goroutine descriptors (about 0.2 KiB for each of
	// the peak goroutines), so a few MiB always stay.
	var left sample
	t1 := time.Now()
	for time.Since(t1) < 20*time.Second {
		time.Sleep(500 * time.Millisecond)
		if left = measure(); left.goroutines <= base.goroutines+5 && left.heap < base.heap+8<<20 {
			break
		}
	}
	if profile != "" {
		if fh, err := os.Create(filepath.Join(profile, "heap-closed.pb.gz")); err == nil {
			pprof.Lookup("heap").WriteTo(fh, 0)
			fh.Close()
		}
	}
	fmt.Printf("closed:               %d nodes in %s\n", count, took.Round(time.Millisecond))
	fmt.Printf("left after close:     %d goroutines (%d before any node), heap %s (%s before any node), %s after closing\n",
		left.goroutines, base.goroutines, mib(float64(left.heap)), mib(float64(base.heap)), time.Since(t1).Round(100*time.Millisecond))
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func writeProfiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"goroutine", "heap"} {
		fh, err := os.Create(filepath.Join(dir, name+".pb.gz"))
		if err != nil {
			return err
		}
		err = pprof.Lookup(name).WriteTo(fh, 0)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s profile: %w", name, err)
		}
	}
	fmt.Printf("profiles:             %s/goroutine.pb.gz, %s/heap.pb.gz\n", dir, dir)
	return nil
}

func countOnline(t tree.Node) int {
	c := 0
	for _, ch := range t.Children {
		if ch.Online {
			c++
		}
	}
	return c
}

// rssBytes is this process's VmRSS, 0 if unknown.
func rssBytes() uint64 {
	var kb uint64
	fmt.Sscanf(rss("self"), "%d kB", &kb)
	return kb << 10
}

func rss(pid string) string {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
