package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The network, all in 10.99.0.0/16 and only inside namespaces this
// program creates:
//
//	server ns  eth0 10.99.0.2/30  ── router ns  srv 10.99.0.1/30
//	site i gateway ns  uplink 10.99.1.(4i+2)/30 ── router ns  s<i> 10.99.1.(4i+1)/30
//	site i gateway ns  br0 10.99.(10+i).1/24: the site's LAN, a bridge with
//	  one port per node of the site
//	node ns  eth0 10.99.(10+i).2 (the relay) or .(10+j) (client j)
//
// Shaped with tbf: the server's eth0 (its uplink), each gateway's uplink (the
// site's uplink), optionally the router's s<i> (the site's downlink), and
// each LAN port both ways (a 1 Gbit/s switch). The router's srv and an
// unshaped s<i> get a FIFO that only counts: the bytes each end of a WAN
// link sent are read from its qdisc (see rootQdisc).

// ledger records, one line each, the namespaces and processes this run
// created, so that cleanup (here, or 'wan cleanup' from wan.sh's trap)
// removes exactly those.
type ledger struct {
	mu   sync.Mutex
	dir  string
	path string
}

func newLedger(dir string) *ledger {
	return &ledger{dir: dir, path: filepath.Join(dir, "created")}
}

func (l *ledger) add(kind, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wan: ledger:", err)
		return
	}
	fmt.Fprintf(f, "%s %s\n", kind, value)
	_ = f.Sync()
	_ = f.Close()
}

// cleanup ends the processes and deletes the namespaces of the ledger in
// dir: processes first (SIGTERM, then SIGKILL after grace), only those
// whose command line still names dir (so a reused pid is never touched),
// then the mounts (lazily), then the namespaces, last created first.
func cleanup(dir string, grace time.Duration) error {
	data, err := os.ReadFile(filepath.Join(dir, "created"))
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	var pids []int
	var spaces, mounts []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		kind, value, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "pid":
			if p, err := strconv.Atoi(value); err == nil {
				pids = append(pids, p)
			}
		case "netns":
			spaces = append(spaces, value)
		case "mount":
			mounts = append(mounts, value)
		}
	}
	ours := func(pid int) bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && bytes.Contains(cmdline, []byte(dir))
	}
	var live []int
	for _, p := range pids {
		if ours(p) {
			_ = syscall.Kill(p, syscall.SIGTERM)
			live = append(live, p)
		}
	}
	deadline := time.Now().Add(grace)
	for len(live) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		live = slices.DeleteFunc(live, func(p int) bool { return !ours(p) })
	}
	for _, p := range live {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	var errs []string
	for _, m := range mounts {
		if err := unmount(m); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for i := len(spaces) - 1; i >= 0; i-- {
		ns := spaces[i]
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("ip netns del %s: %v: %s", ns, err, bytes.TrimSpace(out)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup: %s", strings.Join(errs, "; "))
	}
	return nil
}

// sh runs a command and returns its error with its output.
func sh(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Rates are in Mbit/s; 0 means not shaped.
type rates struct {
	serverUp, siteUp, siteDown, lan float64
}

type topo struct {
	prefix string
	l      *ledger
	router string
	server string // its namespace
	gws    []string
	nodes  [][]string // by site: the relay's namespace, then the clients'
	r      rates
}

func (t *topo) serverIP() string { return "10.99.0.2" }

// nodeIP is the address of node j of site i (1-based): the relay is j = 0
// at .2, client j at .(10+j).
func (t *topo) nodeIP(site, j int) string {
	host := 10 + j
	if j == 0 {
		host = 2
	}
	return fmt.Sprintf("10.99.%d.%d", 10+site, host)
}

func (t *topo) addNS(ctx context.Context, name string) error {
	if err := sh(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	t.l.add("netns", name)
	return sh(ctx, "ip", "-n", name, "link", "set", "lo", "up")
}

func (t *topo) ip(ctx context.Context, ns string, args ...string) error {
	return sh(ctx, "ip", append([]string{"-n", ns}, args...)...)
}

// veth joins namespaces a and b with a pair named ifA in a, ifB in b.
func (t *topo) veth(ctx context.Context, a, ifA, b, ifB string) error {
	return sh(ctx, "ip", "link", "add", ifA, "netns", a, "type", "veth", "peer", "name", ifB, "netns", b)
}

func (t *topo) forward(ctx context.Context, ns string) error {
	return sh(ctx, "ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
}

// shape limits what dev in ns sends to mbit Mbit/s with a token bucket.
func (t *topo) shape(ctx context.Context, ns, dev string, mbit float64) error {
	if mbit <= 0 {
		return nil
	}
	// The bucket holds at least a few full GSO packets, and about 4 ms of
	// traffic at high rates; the queue holds 100 ms.
	burst := max(128<<10, int(mbit*1e6/8*0.004))
	return sh(ctx, "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
		"rate", fmt.Sprintf("%.0fkbit", mbit*1000), "burst", strconv.Itoa(burst), "latency", "100ms")
}

// siteIf is the router's interface toward site i (1-based).
func siteIf(i int) string { return fmt.Sprintf("s%d", i) }

// count gives dev in ns a qdisc that only counts what it sends (a FIFO
// as long as a veth's own queue: it never holds a packet back, the veth
// taking each at once), for a link that is not shaped: see rootQdisc.
func (t *topo) count(ctx context.Context, ns, dev string) error {
	return sh(ctx, "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "pfifo", "limit", "1000")
}

// build creates the namespaces, links, addresses, routes and shapers for
// sites sites of perSite nodes each (a relay and its clients).
func buildTopo(ctx context.Context, l *ledger, prefix string, sites, perSite int, r rates) (*topo, error) {
	t := &topo{prefix: prefix, l: l, r: r, router: prefix + "rt", server: prefix + "srv"}
	steps := []func() error{
		func() error { return t.addNS(ctx, t.router) },
		func() error { return t.forward(ctx, t.router) },
		func() error { return t.addNS(ctx, t.server) },
		func() error { return t.veth(ctx, t.server, "eth0", t.router, "srv") },
		func() error { return t.ip(ctx, t.server, "addr", "add", "10.99.0.2/30", "dev", "eth0") },
		func() error { return t.ip(ctx, t.router, "addr", "add", "10.99.0.1/30", "dev", "srv") },
		func() error { return t.ip(ctx, t.server, "link", "set", "eth0", "up") },
		func() error { return t.ip(ctx, t.router, "link", "set", "srv", "up") },
		func() error { return t.ip(ctx, t.server, "route", "add", "default", "via", "10.99.0.1") },
		func() error { return t.shape(ctx, t.server, "eth0", r.serverUp) },
		func() error { return t.count(ctx, t.router, "srv") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return t, err
		}
	}
	for i := 1; i <= sites; i++ {
		gw := fmt.Sprintf("%sgw%d", prefix, i)
		t.gws = append(t.gws, gw)
		rIf := siteIf(i)
		lan := fmt.Sprintf("10.99.%d", 10+i)
		steps := []func() error{
			func() error { return t.addNS(ctx, gw) },
			func() error { return t.forward(ctx, gw) },
			func() error { return t.veth(ctx, gw, "uplink", t.router, rIf) },
			func() error {
				return t.ip(ctx, gw, "addr", "add", fmt.Sprintf("10.99.1.%d/30", 4*i+2), "dev", "uplink")
			},
			func() error {
				return t.ip(ctx, t.router, "addr", "add", fmt.Sprintf("10.99.1.%d/30", 4*i+1), "dev", rIf)
			},
			func() error { return t.ip(ctx, gw, "link", "set", "uplink", "up") },
			func() error { return t.ip(ctx, t.router, "link", "set", rIf, "up") },
			func() error {
				return t.ip(ctx, gw, "route", "add", "default", "via", fmt.Sprintf("10.99.1.%d", 4*i+1))
			},
			func() error {
				return t.ip(ctx, t.router, "route", "add", lan+".0/24", "via", fmt.Sprintf("10.99.1.%d", 4*i+2))
			},
			func() error { return t.ip(ctx, gw, "link", "add", "br0", "type", "bridge") },
			func() error { return t.ip(ctx, gw, "addr", "add", lan+".1/24", "dev", "br0") },
			func() error { return t.ip(ctx, gw, "link", "set", "br0", "up") },
			func() error { return t.shape(ctx, gw, "uplink", r.siteUp) },
			func() error {
				if r.siteDown > 0 {
					return t.shape(ctx, t.router, rIf, r.siteDown)
				}
				return t.count(ctx, t.router, rIf)
			},
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return t, err
			}
		}
		var nss []string
		for j := 0; j < perSite; j++ {
			ns := fmt.Sprintf("%ss%dn%d", prefix, i, j)
			nss = append(nss, ns)
			port := fmt.Sprintf("p%d", j)
			steps := []func() error{
				func() error { return t.addNS(ctx, ns) },
				func() error { return t.veth(ctx, ns, "eth0", gw, port) },
				func() error { return t.ip(ctx, ns, "addr", "add", t.nodeIP(i, j)+"/24", "dev", "eth0") },
				func() error { return t.ip(ctx, gw, "link", "set", port, "master", "br0") },
				func() error { return t.ip(ctx, ns, "link", "set", "eth0", "up") },
				func() error { return t.ip(ctx, gw, "link", "set", port, "up") },
				func() error { return t.ip(ctx, ns, "route", "add", "default", "via", lan+".1") },
				func() error { return t.shape(ctx, ns, "eth0", r.lan) },
				func() error { return t.shape(ctx, gw, port, r.lan) },
			}
			for _, s := range steps {
				if err := s(); err != nil {
					return t, err
				}
			}
		}
		t.nodes = append(t.nodes, nss)
	}
	return t, nil
}

// counters are the bytes a link carried each way, as the qdiscs at its
// two ends sent them, and what its sending end's qdisc holds now
// (backlog, bytes waiting to go out) and dropped.
type counters struct{ tx, rx, backlog, drops uint64 }

// qdiscStats are the statistics of the root qdisc on a device.
type qdiscStats struct {
	Root    bool   `json:"root"`
	Bytes   uint64 `json:"bytes"` // sent, each packet whole: Ethernet, IP and UDP or TCP headers included
	Backlog uint64 `json:"backlog"`
	Drops   uint64 `json:"drops"`
}

// rootQdisc reads the statistics of the root qdisc on dev in ns. The
// bytes a qdisc sent are those on the wire: a GSO batch (quic-go and TCP
// hand the kernel several packets in one buffer) counts each packet's
// headers, where the device's own counters ('ip -s link') count them once
// per batch, about 2 % short of what crossed the link.
func rootQdisc(ctx context.Context, ns, dev string) (qdiscStats, error) {
	out, err := exec.CommandContext(ctx, "tc", "-j", "-s", "-n", ns, "qdisc", "show", "dev", dev).Output()
	if err != nil {
		return qdiscStats{}, fmt.Errorf("tc -s -n %s qdisc show dev %s: %w", ns, dev, err)
	}
	var v []qdiscStats
	if err := json.Unmarshal(out, &v); err != nil {
		return qdiscStats{}, fmt.Errorf("tc -j -s qdisc: unexpected output %q", out)
	}
	for _, q := range v {
		if q.Root {
			return q, nil
		}
	}
	return qdiscStats{}, fmt.Errorf("no root qdisc on %s in %s", dev, ns)
}

// uplinks reads the server's uplink and each site's uplink counters.
type uplinks struct {
	server counters
	sites  []counters
}

func (t *topo) readUplinks(ctx context.Context) (uplinks, error) {
	var u uplinks
	var err error
	read := func(ns, dev string) qdiscStats {
		q, qerr := rootQdisc(ctx, ns, dev)
		if err == nil {
			err = qerr
		}
		return q
	}
	link := func(up qdiscStats, down qdiscStats) counters {
		return counters{tx: up.Bytes, rx: down.Bytes, backlog: up.Backlog, drops: up.Drops}
	}
	u.server = link(read(t.server, "eth0"), read(t.router, "srv"))
	for i, gw := range t.gws {
		u.sites = append(u.sites, link(read(gw, "uplink"), read(t.router, siteIf(i+1))))
	}
	return u, err
}

func (u uplinks) since(before uplinks) uplinks {
	d := uplinks{server: u.server.since(before.server)}
	for i := range u.sites {
		d.sites = append(d.sites, u.sites[i].since(before.sites[i]))
	}
	return d
}

// since is what c's link carried and dropped since before; its backlog
// is c's, now.
func (c counters) since(before counters) counters {
	return counters{tx: c.tx - before.tx, rx: c.rx - before.rx, backlog: c.backlog, drops: c.drops - before.drops}
}
