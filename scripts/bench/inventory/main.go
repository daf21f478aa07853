// Command inventory measures inventory at scale and on the wire.
//
// Part 1 stores the full inventories of N simulated clients (each with
// about 1,500 software entries drawn from a shared pool, as machines of one
// estate are) in a real SQLite database through the same code a server
// runs when reports arrive, then times the queries an operator asks.
//
// Part 2 runs a real server and client in this process and counts the
// bytes that cross the report protocol for the client's first (full)
// inventory and for a daily re-inventory with nothing changed.
//
//	go run ./scripts/bench/inventory -n 10000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/store"
)

func main() {
	n := flag.Int("n", 10000, "simulated clients to store")
	software := flag.Int("software", 1500, "software entries per client")
	runs := flag.Int("runs", 5, "times each query runs (the median is shown)")
	dir := flag.String("dir", "", "where to put the database (default a temporary directory, removed after)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the storing part to this file")
	flag.StringVar(&dbDSN, "db", "", "store into this database instead of a SQLite file in -dir: a postgres:// URL of an empty database or schema")
	flag.Parse()
	if *n < 1 || *software < 10 || *runs < 1 {
		fmt.Fprintln(os.Stderr, "inventory: -n >= 1, -software >= 10, -runs >= 1")
		os.Exit(2)
	}
	ctx := context.Background()
	if *dir == "" {
		d, err := os.MkdirTemp("", "swdist-inv-bench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "inventory: cpu profile:", err)
			os.Exit(1)
		}
	}
	err := storeBench(ctx, *dir, *n, *software, *runs)
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
	if err := wireBench(ctx, *dir, *software); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

// estate makes machines that look like one organisation's: a common base
// of packages everywhere, the rest drawn from a larger pool, a few
// versions of each.
type estate struct {
	rng      *rand.Rand
	pool     []string
	software int
}

var osVersions = []struct {
	name, version string
	weight        int
}{{"debian", "12.11", 55}, {"debian", "12.10", 25}, {"ubuntu", "22.04", 15}, {"debian", "11.11", 5}}

func (e *estate) machine(i int) inventory.Inventory {
	var inv inventory.Inventory
	inv.Set("hostname", fmt.Sprintf("till-%05d", i))
	w := e.rng.IntN(100)
	for _, o := range osVersions {
		if w -= o.weight; w < 0 {
			inv.Set("os.name", o.name)
			inv.Set("os.version", o.version)
			break
		}
	}
	inv.Set("os.family", "debian")
	inv.Set("os.kind", "linux")
	inv.Set("kernel", "6.1.0-"+strconv.Itoa(20+e.rng.IntN(8))+"-amd64")
	inv.Set("arch", "x86_64")
	inv.Set("cpu.count", strconv.Itoa([]int{2, 4, 8}[e.rng.IntN(3)]))
	inv.Set("cpu.model", "Intel(R) Celeron(R) J4125 CPU @ 2.00GHz")
	inv.Set("memory.total", strconv.Itoa([]int{4, 8, 16}[e.rng.IntN(3)]<<30))
	inv.Set("boot_time", strconv.Itoa(1795000000+e.rng.IntN(1000000)))
	inv.Set("site", fmt.Sprintf("shop-%03d", i/20))
	inv.Set("role", "client")
	inv.Set("groups", "tills")
	inv.Set("swdist.version", node.Version)
	if i%3 == 0 {
		inv.Set("custom.asset-tag", fmt.Sprintf("A-%06d", i))
	}
	inv.Add("disk", inventory.Item{"mount": "/", "device": "/dev/sda1", "fstype": "ext4",
		"size": strconv.Itoa(64 << 30), "free": strconv.Itoa(e.rng.IntN(60) << 30), "used_percent": strconv.Itoa(e.rng.IntN(100))})
	inv.Add("net", inventory.Item{"name": "eth0", "mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&255, i>>8&255, i&255),
		"addrs": fmt.Sprintf("10.%d.%d.%d/24", i>>16&255, i>>8&255, i&255), "mtu": "1500"})
	base := e.software * 4 / 5
	picked := map[int]bool{}
	for j := range base {
		picked[j] = true
	}
	for len(picked) < e.software {
		picked[base+e.rng.IntN(len(e.pool)-base)] = true
	}
	for j := range picked {
		name := e.pool[j]
		version := "1." + strconv.Itoa(j%7) + "." + strconv.Itoa(j%13)
		if r := e.rng.IntN(100); r < 20 { // one machine in five lags on each package
			version += "~old" + strconv.Itoa(r%3)
		}
		if name == "openssl" {
			version = []string{"3.0.15-1~deb12u1", "3.0.15-1~deb12u1", "3.0.15-1~deb12u1", "3.0.14-1~deb12u2", "1.1.1w-0+deb11u1"}[e.rng.IntN(5)]
		}
		inv.Add("software", inventory.Item{"name": name, "version": version, "arch": "amd64", "source": "dpkg"})
	}
	return inv
}

func newEstate(software int) *estate {
	e := &estate{rng: rand.New(rand.NewPCG(1, 2)), software: software}
	e.pool = append(e.pool, "openssl")
	for j := 1; j < software*2; j++ {
		e.pool = append(e.pool, fmt.Sprintf("lib%s-pkg%04d", []string{"ssl", "gtk", "x11", "py", "perl", "gnome"}[j%6], j))
	}
	return e
}

func fileSize(paths ...string) int64 {
	var total int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	return total
}

// dbDSN is -db.
var dbDSN string

func storeBench(ctx context.Context, dir string, n, software, runs int) error {
	path := filepath.Join(dir, "server.db")
	dsn := path
	if dbDSN != "" {
		dsn = dbDSN
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	codec, err := inventory.NewCodec()
	if err != nil {
		return err
	}
	e := newEstate(software)
	relay, err := peer.Decode("12D3KooWCb6vCRALxqpQvdQW2yY7BvVXvLXgGbuBjxjToPr1NTFA")
	if err != nil {
		return err
	}
	fmt.Printf("swdist inventory benchmark: %d simulated clients, %d software entries each, stored in SQLite (%s)\n", n, software, path)
	var encode, apply time.Duration
	var wire int64
	var batch []report.Report
	batchBytes := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		t0 := time.Now()
		err := st.Apply(ctx, relay, batch, false)
		apply += time.Since(t0)
		batch, batchBytes = batch[:0], 0
		return err
	}
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		inv := e.machine(i)
		body, err := codec.Encode(inventory.FullDelta(inv, 1))
		if err != nil {
			return err
		}
		encode += time.Since(t0)
		wire += int64(len(body))
		id := fakeID(i)
		batch = append(batch, report.Report{ID: fmt.Sprintf("inv/%s/1", id), Origin: id, Kind: store.KindInventory, At: time.Now().UnixMilli(), Body: body})
		// As the report protocol batches: up to 1,000 reports or 4 MiB.
		if batchBytes += len(body); len(batch) == report.MaxBatch || batchBytes > 4<<20 {
			if err := flush(); err != nil {
				return err
			}
		}
		if (i+1)%(max(n/10, 1)) == 0 {
			fmt.Printf("  stored %6d clients, %s\n", i+1, time.Since(start).Round(100*time.Millisecond))
		}
	}
	if err := flush(); err != nil {
		return err
	}
	fmt.Printf("full report size:     %.1f KiB compressed on average (%d entries each)\n", float64(wire)/float64(n)/1024, software+2)
	fmt.Printf("store all:            %s applying (%.0f clients/s, %.0f software rows/s), %s generating and encoding them\n",
		apply.Round(10*time.Millisecond), float64(n)/apply.Seconds(), float64(n*software)/apply.Seconds(), encode.Round(10*time.Millisecond))
	if dbDSN == "" {
		fmt.Printf("database size:        %.1f MiB (swdist.db with its WAL)\n", float64(fileSize(path, path+"-wal"))/(1<<20))
	}

	eng := inventory.Engine{Src: st}
	cond := func(s string) inventory.Cond {
		c, err := inventory.ParseCond(s)
		if err != nil {
			panic(err)
		}
		return c
	}
	queries := []struct {
		name string
		q    inventory.Query
		list bool
	}{
		{"sum --by os.version", inventory.Query{By: []string{"os.version"}}, false},
		{"sum --by software.version --where software.name=openssl", inventory.Query{By: []string{"software.version"}, Where: []inventory.Cond{cond("software.name=openssl")}}, false},
		{"sum --by site --where disk.free<10G", inventory.Query{By: []string{"site"}, Where: []inventory.Cond{cond("disk.free<10G")}}, false},
		{"ls --where os.version=11.11 --where software.name=openssl", inventory.Query{Where: []inventory.Cond{cond("os.version=11.11"), cond("software.name=openssl")}}, true},
	}
	for _, q := range queries {
		var times []time.Duration
		var rows, machines int
		for range runs {
			t0 := time.Now()
			if q.list {
				r, err := eng.List(ctx, q.q)
				if err != nil {
					return err
				}
				rows, machines = len(r), len(r)
			} else {
				s, err := eng.Sum(ctx, q.q)
				if err != nil {
					return err
				}
				rows, machines = len(s.Rows), s.Machines
			}
			times = append(times, time.Since(t0))
		}
		slices.Sort(times)
		fmt.Printf("query:                %-58s median %4d ms, min %4d ms (%d rows, %d machines; target <= 300 ms)\n",
			q.name, times[len(times)/2].Milliseconds(), times[0].Milliseconds(), rows, machines)
	}
	return nil
}

// fakeID is a valid, distinct peer ID for simulated client i.
func fakeID(i int) peer.ID {
	b := make([]byte, 34)
	b[0], b[1] = 0x12, 0x20 // sha2-256 multihash of 32 bytes
	copy(b[2:], fmt.Sprintf("%032d", i))
	return peer.ID(b)
}

// fixed is a collector that reports the same inventory every time.
type fixed struct{ inv inventory.Inventory }

func (fixed) Name() string { return "simulated" }
func (f fixed) Collect(_ context.Context, inv *inventory.Inventory) error {
	*inv = f.inv.Clone()
	return nil
}

func wireBench(ctx context.Context, dir string, software int) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	listen := []string{"/ip4/127.0.0.1/tcp/0"}
	sh := home.Home{Dir: filepath.Join(dir, "server")}
	if _, err := node.Init(sh, node.InitOptions{Role: cert.RoleServer, Site: "hq", Listen: listen}); err != nil {
		return err
	}
	srv, err := node.Open(ctx, sh, node.Options{NoAPI: true, Logger: quiet})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	tok, err := srv.CreateToken(ctx, api.TokenRequest{Role: "client", Site: "a"})
	if err != nil {
		return err
	}
	ch := home.Home{Dir: filepath.Join(dir, "client")}
	if _, err := node.Join(ctx, ch, node.JoinOptions{Token: tok.Token, Listen: listen}); err != nil {
		return err
	}
	sim := newEstate(software).machine(1)
	cl, err := node.Open(ctx, ch, node.Options{NoAPI: true, Logger: quiet, InventoryCollectors: []inventory.Collector{fixed{sim}}})
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Start(ctx); err != nil {
		return err
	}
	id := cl.Host().ID().String()
	waitSeq := func(seq uint64) error {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if m, err := srv.InventoryShow(ctx, id); err == nil && m.Seq >= seq {
				return nil
			}
		}
		return fmt.Errorf("the server never got the client's inventory %d", seq)
	}
	bytesNow := func() (int64, error) {
		time.Sleep(1200 * time.Millisecond) // the counters move once a second
		bw, err := cl.Bandwidth(ctx)
		t := bw.Protocols[string(report.Protocol)]
		return t.In + t.Out, err
	}
	if err := waitSeq(1); err != nil {
		return err
	}
	first, err := bytesNow()
	if err != nil {
		return err
	}
	fmt.Printf("\nOn the wire (a real server and client on loopback; bytes of the report protocol's streams both ways,\nnot counting the multiplexer's and Noise's framing of a few dozen bytes per message):\n")
	fmt.Printf("first inventory:      %d bytes (full: %d fields, %d software entries)\n", first, len(sim.Fields), len(sim.Items["software"]))
	const days = 3
	for day := 1; day <= days; day++ {
		d, err := cl.InventoryCollect(ctx)
		if err != nil {
			return err
		}
		if err := waitSeq(d.Seq); err != nil {
			return err
		}
		now, err := bytesNow()
		if err != nil {
			return err
		}
		fmt.Printf("re-inventory day %d:  %d bytes (nothing changed: %d changes; target <= 1024)\n", day, now-first, d.Changes)
		first = now
	}
	st, err := srv.InventoryStats(ctx)
	if err != nil {
		return err
	}
	if st.Stale != 0 {
		return errors.New("the server marked the client stale")
	}
	return nil
}
