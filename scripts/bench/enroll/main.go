// Command enroll measures one relay holding many children: a server, a relay
// under it and N clients under the relay, every one a real libp2p host on
// loopback in this process, each enrolled with a real one-time token. It
// prints the time to enroll them and to see them online, the memory and
// goroutines each client costs, and whether the relay still holds them all
// after the connection manager's grace period (nothing trimmed).
//
//	go run ./scripts/bench/enroll -n 1000
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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
)

func main() {
	n := flag.Int("n", 1000, "clients under the relay")
	conc := flag.Int("concurrency", 32, "enrollments at once")
	idle := flag.Duration("idle", 70*time.Second, "idle time before checking nothing was trimmed (the connection manager's grace period is 1 minute)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	quic := flag.Bool("quic", false, "clients listen on QUIC as well as TCP")
	bin := flag.String("swdist", "", "path to a built swdist binary: run the server and relay as separate processes, to measure the relay's own memory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, *n, *conc, *idle, *quic, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "enroll:", err)
		os.Exit(1)
	}
}

type sample struct {
	heap       uint64
	goroutines int
}

func measure() sample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
}

func mib(b float64) string { return fmt.Sprintf("%.2f MiB", b/(1<<20)) }

// parent is where the clients enroll: a relay in this process, or one run
// as a separate 'swdist run' process.
type parent interface {
	token(ctx context.Context) (string, error)
	tree(ctx context.Context) (tree.Node, error)
	conns() int
	memory() string
}

type inProcess struct{ n *node.Node }

func (p inProcess) token(ctx context.Context) (string, error) {
	t, err := p.n.CreateToken(ctx, api.TokenRequest{Role: "client", Site: "a"})
	return t.Token, err
}
func (p inProcess) tree(ctx context.Context) (tree.Node, error) { return p.n.Tree(ctx, 1) }
func (p inProcess) conns() int                                  { return len(p.n.Host().Network().Conns()) }
func (p inProcess) memory() string                              { return "in this process (see above)" }

func run(ctx context.Context, n, conc int, idle time.Duration, quic bool, bin string) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if need := uint64(4*n + 100); lim.Cur < need {
		return fmt.Errorf("open-file limit is %d, %d clients need %d: raise it with 'ulimit -n %d'", lim.Cur, n, need, need)
	}
	dir, err := os.MkdirTemp("", "swdist-bench-enroll-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	transports := "TCP"
	if quic {
		listen = append(listen, "/ip4/127.0.0.1/udp/0/quic-v1")
		transports = "TCP and QUIC"
	}
	var nodes []*node.Node
	var mu sync.Mutex
	defer func() {
		for _, nd := range nodes {
			nd.Close()
		}
	}()
	open := func(h home.Home) (*node.Node, error) {
		nd, err := node.Open(ctx, h, node.Options{NoAPI: true, Logger: log})
		if err != nil {
			return nil, err
		}
		mu.Lock()
		nodes = append(nodes, nd)
		mu.Unlock()
		return nd, nd.Start(ctx)
	}

	base := measure()
	var relay parent
	where := "all in one process"
	if bin != "" {
		pr, err := startProcesses(ctx, bin, dir, listen)
		if err != nil {
			return err
		}
		defer pr.stop()
		relay, where = pr, "server and relay as separate processes, clients in this one"
	} else {
		if _, err := node.Init(home.Home{Dir: filepath.Join(dir, "server")}, node.InitOptions{Role: cert.RoleServer, Site: "hq", Listen: listen}); err != nil {
			return err
		}
		server, err := open(home.Home{Dir: filepath.Join(dir, "server")})
		if err != nil {
			return err
		}
		tok, err := server.CreateToken(ctx, api.TokenRequest{Role: "relay", Site: "a"})
		if err != nil {
			return err
		}
		h := home.Home{Dir: filepath.Join(dir, "relay")}
		if _, err := node.Join(ctx, h, node.JoinOptions{Token: tok.Token, Listen: listen}); err != nil {
			return fmt.Errorf("join relay: %w", err)
		}
		r, err := open(h)
		if err != nil {
			return err
		}
		relay = inProcess{r}
	}
	join := func(name string) error {
		tok, err := relay.token(ctx)
		if err != nil {
			return err
		}
		h := home.Home{Dir: filepath.Join(dir, name)}
		if _, err := node.Join(ctx, h, node.JoinOptions{Token: tok, Listen: listen}); err != nil {
			return fmt.Errorf("join %s: %w", name, err)
		}
		_, err = open(h)
		return err
	}
	withRelay := measure()

	fmt.Printf("swdist enroll benchmark: 1 server, 1 relay, %d clients on loopback (%s; %s)\n", n, transports, where)
	start := time.Now()
	sem := make(chan struct{}, conc)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := join(fmt.Sprintf("c%05d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	enrolled := time.Since(start)
	fmt.Printf("enrolled:            %d clients in %s (%.0f/s, %d at once)\n", n, enrolled.Round(time.Millisecond), float64(n)/enrolled.Seconds(), conc)

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
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d online: %w", got, n, ctx.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("all online:          %s after the first enrollment\n", time.Since(start).Round(time.Millisecond))

	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
	}
	idleSample := measure()
	perHeap := float64(idleSample.heap-withRelay.heap) / float64(n)
	perG := float64(idleSample.goroutines-withRelay.goroutines) / float64(n)
	fmt.Printf("heap in use:         %s before any node, %s with server and relay, %s with %d idle clients\n",
		mib(float64(base.heap)), mib(float64(withRelay.heap)), mib(float64(idleSample.heap)), n)
	side := "includes the relay's side of each connection"
	if bin != "" {
		side = "the clients alone"
	}
	fmt.Printf("heap per client:     %s (%s; target <= 4 MiB)\n", mib(perHeap), side)
	fmt.Printf("goroutines:          %d before, %d with server and relay, %d with clients\n", base.goroutines, withRelay.goroutines, idleSample.goroutines)
	fmt.Printf("goroutines/client:   %.1f (%s; target <= 100)\n", perG, side)
	conns := relay.conns
	fmt.Printf("relay peers:         %d verified peers connected (its children and its parent)\n", conns())
	fmt.Printf("relay memory:        %s\n", relay.memory())

	fmt.Printf("idling %s (past the connection manager's 1 minute grace period)...\n", idle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(idle):
	}
	got, err := online()
	if err != nil {
		return err
	}
	fmt.Printf("after idle:          %d of %d online, relay holds %d verified peers; trimmed: %d\n", got, n, conns(), n-got)
	fmt.Printf("relay memory:        %s\n", relay.memory())
	fmt.Printf("process RSS:         %s\n", rss("self"))
	if got != n {
		return errors.New("the relay lost children while idle")
	}
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
