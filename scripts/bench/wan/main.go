// Command wan is the WAN benchmark (run it through scripts/bench/wan.sh,
// as root): a server, sites behind shaped uplinks, a relay and clients at
// each site, every node a real 'swdist run' process in its own network
// namespace with its own home, enrolled with real tokens. It sends one
// package of incompressible bytes to every client with a signed job and
// measures the time until the last client holds it verified, against the
// topology's lower bound, and the bytes each uplink carried, then the same
// file over plain HTTP from the server as a baseline. With -resume it
// kills a client halfway through its fetch, restarts it, and counts the
// bytes it fetched again.
//
// Subcommands used by wan.sh and by the benchmark itself:
//
//	wan cleanup -dir D      end the processes, unmount the mounts, delete the namespaces of D's ledger
//	wan deadline [flags]    seconds wan.sh allows the whole run
//	wan freezefs ...        -hang-relay-disk's disk that stops answering (freezefs.go)
//	wan serve-http ...      the baseline's file server (in the server's namespace)
//	wan get-http ...        one baseline download (in a client's namespace)
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	sites, clients int
	r              rates
	sizeMiB        float64
	jobType        string
	notBefore      time.Duration
	lateRelay      time.Duration
	stallRelay     time.Duration
	hangDisk       time.Duration
	timeout        time.Duration
	quick, resume  bool
	noHTTP         bool
	qlog           bool
	dir, bin       string
	logLevel       string
	transport      string
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("wan", flag.ContinueOnError)
	fs.IntVar(&o.sites, "sites", 3, "sites, each behind its own uplink")
	fs.IntVar(&o.clients, "clients", 5, "clients per site (besides its relay)")
	fs.Float64Var(&o.r.serverUp, "server-up", 50, "the server's uplink, Mbit/s")
	fs.Float64Var(&o.r.siteUp, "site-up", 20, "each site's uplink, Mbit/s")
	fs.Float64Var(&o.r.siteDown, "site-down", 0, "each site's downlink, Mbit/s (0: not shaped beyond the LAN)")
	fs.Float64Var(&o.r.lan, "lan", 1000, "each LAN port inside a site, Mbit/s, both ways")
	fs.Float64Var(&o.sizeMiB, "size", 64, "package size, MiB of incompressible bytes")
	fs.StringVar(&o.jobType, "type", "transfer", "job type: transfer (fetch and keep) or install (also unpack)")
	fs.DurationVar(&o.notBefore, "not-before", 0, "clients start this long after the job is created (relays prefetch at once): shows the relays' own exchange")
	fs.DurationVar(&o.lateRelay, "late-relay", 0, "the last site's relay is stopped (SIGSTOP) just before the job is created and continued this long after: a relay late to the job")
	fs.DurationVar(&o.stallRelay, "stall-relay", 0, fmt.Sprintf("the last site's relay is stopped (SIGSTOP) %s after the job is created, as its siblings count on it for its share, and continued this long after: a relay that stalls", stallAfter))
	fs.DurationVar(&o.hangDisk, "hang-relay-disk", 0, fmt.Sprintf("the last site's relay keeps its blocks on a disk (a FUSE file system) that stops answering %s after the job is created, for this long: the relay lives on, its reads and writes of blocks hang", stallAfter))
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long, cleaning up")
	fs.BoolVar(&o.quick, "quick", false, "a quick check: 8 MiB (24 with -resume), 2 clients per site (unless set)")
	fs.BoolVar(&o.resume, "resume", false, "instead: kill a client at 50% of its fetch, restart it, count bytes fetched again")
	fs.BoolVar(&o.noHTTP, "no-http", false, "skip the HTTP baseline")
	fs.BoolVar(&o.qlog, "qlog", false, "the server and relays write qlogs (QLOGDIR), summed per WAN connection at the end; with -keep-dir to keep them")
	fs.StringVar(&o.transport, "transport", "both", "what the nodes listen on: both (TCP and QUIC, as 'swdist init' sets), tcp or quic")
	fs.StringVar(&o.logLevel, "log-level", "", "the nodes' log level (debug, info, warn, error; default their config's), with -keep-dir to read them")
	fs.StringVar(&o.dir, "dir", "", "work directory (wan.sh makes it)")
	fs.StringVar(&o.bin, "swdist", "", "the swdist binary (wan.sh builds it)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["size"] {
			o.sizeMiB = 8
			if o.resume {
				o.sizeMiB = 24 // long enough a fetch to stop it halfway
			}
		}
		if !set["clients"] {
			o.clients = 2
		}
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.sites < 1 || o.sites > 60:
		return o, errors.New("-sites must be 1 to 60")
	case o.clients < 1 || o.clients > 200:
		return o, errors.New("-clients must be 1 to 200")
	case o.r.serverUp <= 0 || o.r.siteUp <= 0 || o.r.lan < 0 || o.r.siteDown < 0:
		return o, errors.New("-server-up and -site-up must be positive, -lan and -site-down at least 0")
	case o.sizeMiB <= 0:
		return o, errors.New("-size must be positive")
	case o.lateRelay < 0 || o.stallRelay < 0 || o.hangDisk < 0:
		return o, errors.New("-late-relay, -stall-relay and -hang-relay-disk cannot be negative")
	case (o.lateRelay > 0 && o.stallRelay > 0) || (o.hangDisk > 0 && o.lateRelay+o.stallRelay > 0):
		return o, errors.New("only one of -late-relay, -stall-relay and -hang-relay-disk may be set")
	case o.transport != "both" && o.transport != "tcp" && o.transport != "quic":
		return o, errors.New("-transport must be both, tcp or quic")
	case o.jobType != "transfer" && o.jobType != "install":
		return o, errors.New("-type must be transfer or install")
	}
	return o, nil
}

func main() {
	if len(os.Args) > 1 {
		if handled, err := subcommand(os.Args[1], os.Args[2:]); handled {
			if err != nil {
				fmt.Fprintln(os.Stderr, "wan:", err)
				os.Exit(1)
			}
			return
		}
	}
	o, err := parse(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "wan:", err)
		os.Exit(2)
	}
	if o.dir == "" || o.bin == "" {
		fmt.Fprintln(os.Stderr, "wan: -dir and -swdist are required: run scripts/bench/wan.sh")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	err = bench(ctx, o)
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("timed out after %s (-timeout): %w; cleaned up", o.timeout, err)
	case ctx.Err() != nil:
		err = errors.New("interrupted; cleaned up")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wan:", err)
		os.Exit(1)
	}
}

// subcommand runs the subcommand name, if it is one.
func subcommand(name string, args []string) (bool, error) {
	switch name {
	case "serve-http":
		return true, serveHTTP(args)
	case "get-http":
		return true, getHTTP(args)
	case "freezefs":
		return true, freezeFS(args)
	case "cleanup":
		fs := flag.NewFlagSet("cleanup", flag.ExitOnError)
		dir := fs.String("dir", "", "work directory")
		_ = fs.Parse(args)
		if *dir == "" {
			return true, errors.New("cleanup: -dir is required")
		}
		return true, cleanup(*dir, 10*time.Second)
	case "deadline":
		o, err := parse(args)
		if err != nil {
			return true, err
		}
		fmt.Println(int(o.timeout.Seconds()) + 60)
		return true, nil
	}
	return false, nil
}

func bench(ctx context.Context, o options) (err error) {
	l := newLedger(o.dir)
	var c *cluster
	defer func() {
		if c != nil {
			c.stopAll()
		}
		if cerr := cleanup(o.dir, 10*time.Second); cerr != nil && err == nil {
			err = cerr
		}
	}()
	prefix := "wan-" + strings.TrimPrefix(filepath.Ext(o.dir), ".") + "-"
	if len(prefix) > 24 {
		prefix = prefix[:24]
	}
	start := time.Now()
	fmt.Printf("Building %d sites (a relay and %d clients each) behind %.0f Mbit/s uplinks, the server behind %.0f Mbit/s, in namespaces %s*\n",
		o.sites, o.clients, o.r.siteUp, o.r.serverUp, prefix)
	t, err := buildTopo(ctx, l, prefix, o.sites, o.clients+1, o.r)
	if err != nil {
		return err
	}
	size := int64(o.sizeMiB * (1 << 20))
	file, digest, err := randomFile(filepath.Join(o.dir, "pkg"), "wanbench.bin", size)
	if err != nil {
		return err
	}
	c, err = buildCluster(ctx, t, o.bin, o.dir, o.logLevel, o.transport, o.qlog, o.hangDisk > 0, l)
	if err != nil {
		return err
	}
	fmt.Printf("Enrolled and online: %d nodes, %s\n", len(c.all()), time.Since(start).Round(100*time.Millisecond))
	key := filepath.Join(o.dir, "alice.key")
	if err := c.swdist(ctx, c.server, nil, "admin", "keygen", "--out", key); err != nil {
		return err
	}
	if err := c.swdist(ctx, c.server, nil, "admin", "add", "--name", "alice", "--pubkey", key+".pub", "--out", key+".cert"); err != nil {
		return err
	}
	var p pkgAdded
	if err := c.swdist(ctx, c.server, &p, "package", "add", file, "--name", "wanbench", "--version", "1"); err != nil {
		return err
	}
	fmt.Printf("Package wanbench@1: %s, %d bytes, stored %d bytes in %d chunks\n", p.CID, p.Size, p.StoredBytes, p.Chunks)
	if o.resume {
		return resume(ctx, o, t, c, key, p)
	}
	sw, err := runJob(ctx, o, t, c, key, p)
	if err != nil {
		return err
	}
	printBandwidth(c, sw)
	c.stopAll()
	if o.qlog {
		// After stopAll: each connection's qlog is complete once it closed.
		if err := printQlog(c, sw.jobStart); err != nil {
			return fmt.Errorf("qlog: %w", err)
		}
	}
	var h *httpResult
	if !o.noHTTP {
		fmt.Printf("HTTP baseline: %d clients download %s from the server at once...\n", len(c.allClients()), filepath.Base(file))
		r, err := httpBaseline(ctx, t, c, l, file, digest)
		if err != nil {
			return err
		}
		h = &r
	}
	printTable(o, size, sw, h)
	fmt.Printf("\nWhole run: %s\n", time.Since(start).Round(time.Second))
	return nil
}

// pkgAdded is what 'swdist package add --json' prints.
type pkgAdded struct {
	CID         string `json:"cid"`
	Size        uint64 `json:"size"`
	StoredBytes uint64 `json:"stored_bytes"`
	Chunks      int    `json:"chunks"`
}

// randomFile writes size incompressible bytes to dir/name and returns its
// path and SHA-256.
func randomFile(dir, name string, size int64) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		f.Close()
		return "", "", err
	}
	return path, hex.EncodeToString(h.Sum(nil)), f.Close()
}

// spread is the first, median and last of times.
func spread(times []time.Duration) (first, median, last time.Duration) {
	if len(times) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(times)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}
