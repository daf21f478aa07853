package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/node/api"
)

// blocksProto is the protocol package blocks travel over, as 'swdist stats
// bw' names it.
const blocksProto = string(exchange.Protocol)

type swResult struct {
	last, first, median time.Duration   // by each client's clock: when it held the verified package
	reported            time.Duration   // when the server knew the last client had it
	relayHeld           []time.Duration // by site, as polled (every 100 ms); 0 if not seen
	wanLinks            map[string]int  // relays' connections to their parent and to each other, by transport
	up                  uplinks         // at the last client's success
	settled             uplinks         // 3 s later
	bw                  map[*node]api.Bandwidth
	cpu                 map[*node]float64 // CPU seconds each daemon used since it started
	selfCPU             float64           // this program's, polling
	jobStart            time.Time         // when the job was created
}

// createJob signs and submits the job at the server and returns its id.
func createJob(ctx context.Context, o options, c *cluster, key string, target ...string) (string, error) {
	var created api.JobCreated
	args := []string{"job", "create", "--type", o.jobType, "--package", "wanbench@1", "--sign-key", key}
	if o.notBefore > 0 {
		args = append(args, "--not-before", o.notBefore.String())
	}
	for _, t := range target {
		args = append(args, "--target", t)
	}
	if err := c.swdist(ctx, c.server, &created, args...); err != nil {
		return "", err
	}
	return created.ID, nil
}

// watch polls the job's status at the server until every destination is
// done, calling each(status, elapsed) on every poll; it returns when each
// destination first reached a final state.
func watch(ctx context.Context, c *cluster, id string, t0 time.Time, each func(api.JobStatus, time.Duration) error) (map[string]time.Duration, api.JobStatus, error) {
	doneAt := map[string]time.Duration{}
	lastPrint := time.Now()
	for {
		st, err := c.server.api.JobStatus(ctx, id, true)
		el := time.Since(t0)
		if err != nil {
			if ctx.Err() != nil {
				return doneAt, st, ctx.Err()
			}
		} else {
			for p, s := range st.Destinations {
				if _, ok := doneAt[p]; !ok && final(s) {
					doneAt[p] = el
				}
			}
			if each != nil {
				if err := each(st, el); err != nil {
					return doneAt, st, err
				}
			}
			if st.Done {
				return doneAt, st, nil
			}
			if each == nil && time.Since(lastPrint) > 5*time.Second {
				lastPrint = time.Now()
				fmt.Printf("  %5.1f s  %s\n", el.Seconds(), countsLine(st.Counts))
			}
		}
		select {
		case <-ctx.Done():
			return doneAt, st, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func final(state string) bool {
	switch state {
	case "succeeded", "failed", "skipped", "expired", "cancelled":
		return true
	}
	return false
}

func countsLine(counts map[string]int) string {
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

func checkSucceeded(st api.JobStatus) error {
	if st.Counts["succeeded"] == st.Expected {
		return nil
	}
	var why []string
	for _, f := range st.Failed {
		why = append(why, fmt.Sprintf("%s: %s", short(f.PeerID), f.Reason))
	}
	for _, f := range st.Skipped {
		why = append(why, fmt.Sprintf("%s skipped: %s", short(f.PeerID), f.Reason))
	}
	return fmt.Errorf("job ended with %s of %d expected: %s", countsLine(st.Counts), st.Expected, strings.Join(why, "; "))
}

func short(p string) string {
	if len(p) > 10 {
		return "…" + p[len(p)-10:]
	}
	return p
}

// runJob sends the package to every client and measures.
func runJob(ctx context.Context, o options, t *topo, c *cluster, key string, p pkgAdded) (swResult, error) {
	var r swResult
	before, err := t.readUplinks(ctx)
	if err != nil {
		return r, err
	}
	r.relayHeld = make([]time.Duration, len(c.relays))
	fmt.Printf("Job: %s wanbench@1 to role=client (%d clients)...\n", o.jobType, len(c.allClients()))
	if o.lateRelay > 0 {
		late := c.relays[len(c.relays)-1]
		cont, err := stopFor(late, 0, o.lateRelay, nil)
		if err != nil {
			return r, err
		}
		defer cont()
		fmt.Printf("  %s stopped (SIGSTOP) before the job; continued %s after it\n", late.name, o.lateRelay)
	}
	t0 := time.Now()
	r.jobStart = t0
	id, err := createJob(ctx, o, c, key, "role=client")
	if err != nil {
		return r, err
	}
	fmt.Printf("  %5.2f s  job %s signed and accepted by the server ('swdist job create')\n", time.Since(t0).Seconds(), id)
	if o.stallRelay > 0 {
		stalled := c.relays[len(c.relays)-1]
		cont, _ := stopFor(stalled, time.Until(t0.Add(stallAfter)), o.stallRelay, func(err error) {
			if err != nil {
				fmt.Println("  ", err)
				return
			}
			fmt.Printf("  %5.2f s  %s stopped (SIGSTOP); continued %s after\n", time.Since(t0).Seconds(), stalled.name, o.stallRelay)
		})
		defer cont()
	}
	if o.hangDisk > 0 {
		relay := c.relays[len(c.relays)-1]
		end := c.disk.freezeFor(time.Until(t0.Add(stallAfter)), o.hangDisk, func(err error) {
			if err != nil {
				fmt.Println("  ", err)
				return
			}
			fmt.Printf("  %5.2f s  %s's disk stopped answering; it answers again %s after\n", time.Since(t0).Seconds(), relay.name, o.hangDisk)
		})
		defer end()
	}
	last, lastAt := before, t0
	lastCPU := readCPU()
	queued := make([]uint64, len(t.gws)) // sum of the samples of each site's shaper queue
	samples := 0
	// Each relay is asked, apart from the job's status (the server's
	// answer waits for its relays' subtrees: a stopped one holds it up to
	// its tree timeout), until it holds the package: its record of the
	// package says when to the second only.
	pctx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	var polls sync.WaitGroup
	for i, rl := range c.relays {
		polls.Add(1)
		go func() { // owns r.relayHeld[i] until polls.Wait
			defer polls.Done()
			for pctx.Err() == nil {
				actx, cancel := context.WithTimeout(pctx, time.Second)
				pk, err := rl.api.FindPackage(actx, p.CID)
				cancel()
				if err == nil && pk.Held {
					r.relayHeld[i] = time.Since(t0)
					return
				}
				select {
				case <-pctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	doneAt, st, err := watch(ctx, c, id, t0, func(st api.JobStatus, el time.Duration) error {
		if time.Since(lastAt) >= time.Second {
			// What the uplinks carry: where the run is bound.
			if now, err := t.readUplinks(ctx); err == nil {
				d, secs := now.since(last), time.Since(lastAt).Seconds()
				line := fmt.Sprintf("  %5.1f s  Mbit/s sent: server %.1f", el.Seconds(), float64(d.server.tx)*8/secs/1e6)
				// And what waits in each site's shaper (a sample): a full
				// queue delays everything that leaves the site, the ACKs of
				// what it receives included.
				samples++
				for i := range d.sites {
					queued[i] += d.sites[i].backlog
					line += fmt.Sprintf(", s%d %.1f (in %.1f, queue %d KiB)", i+1, float64(d.sites[i].tx)*8/secs/1e6, float64(d.sites[i].rx)*8/secs/1e6, d.sites[i].backlog>>10)
				}
				cpu := readCPU()
				fmt.Printf("%s; CPU (machine) %.0f %%; %s\n", line, cpu.busySince(lastCPU), countsLine(st.Counts))
				last, lastAt, lastCPU = now, time.Now(), cpu
			}
		}
		return nil
	})
	// A relay's record may land just after the job is done.
	polled := make(chan struct{})
	go func() { polls.Wait(); close(polled) }()
	select {
	case <-polled:
	case <-time.After(3 * time.Second):
	}
	stopPolling()
	polls.Wait()
	if err != nil {
		return r, err
	}
	after, err := t.readUplinks(ctx)
	if err != nil {
		return r, err
	}
	if err := checkSucceeded(st); err != nil {
		return r, err
	}
	for _, d := range doneAt {
		r.reported = max(r.reported, d)
	}
	r.up = after.since(before)
	fmt.Printf("  %5.1f s  %s: the server knows the last client holds the verified package\n", r.reported.Seconds(), countsLine(st.Counts))
	if samples > 0 {
		line := "Site uplink shapers (tbf): mean queue of the samples above, packets dropped:"
		for i, s := range r.up.sites {
			line += fmt.Sprintf(" s%d %d KiB, %d;", i+1, queued[i]/uint64(samples)>>10, s.drops)
		}
		fmt.Println(strings.TrimSuffix(line, ";"))
	}
	// When each client held it, by its own clock (the same machine's): the
	// time its report of success carries, before it travelled up the tree.
	var times []time.Duration
	for _, cl := range c.allClients() {
		d, err := c.server.api.JobDestination(ctx, id, cl.peerID)
		if err != nil {
			return r, fmt.Errorf("status of %s: %w", cl.name, err)
		}
		if d.State != "succeeded" {
			return r, fmt.Errorf("%s: %s, not succeeded", cl.name, d.State)
		}
		times = append(times, d.At.Sub(t0))
	}
	r.first, r.median, r.last = spread(times)
	time.Sleep(3 * time.Second)
	settled, err := t.readUplinks(ctx)
	if err != nil {
		return r, err
	}
	r.settled = settled.since(before)
	r.selfCPU = cpuOf("self")
	r.bw = map[*node]api.Bandwidth{}
	r.cpu = map[*node]float64{}
	for _, n := range c.all() {
		r.cpu[n] = n.cpuSeconds()
		if b, err := n.api.Bandwidth(ctx); err == nil {
			r.bw[n] = b
			if data, err := json.MarshalIndent(b, "", "  "); err == nil {
				_ = os.WriteFile(n.home+".bw.json", data, 0o644)
			}
		}
	}
	// Which transport the WAN links took (a node listening on both, as by
	// default, is dialed over QUIC first).
	r.wanLinks = map[string]int{}
	for _, rl := range c.relays {
		peers, err := rl.api.Peers(ctx)
		if err != nil {
			continue
		}
		for _, pr := range peers {
			if pr.Relation == "child" {
				continue
			}
			for _, a := range pr.Addrs {
				switch {
				case strings.Contains(a, "/quic"):
					r.wanLinks["QUIC"]++
				case strings.Contains(a, "/tcp/"):
					r.wanLinks["TCP"]++
				}
			}
		}
	}
	return r, nil
}

// printBandwidth shows who sent what to whom ('swdist stats bw' on every
// node): bytes of all streams to each kind of peer, and of the blocks
// protocol.
func printBandwidth(c *cluster, sw swResult) {
	bw := sw.bw
	fmt.Println("\nWho sent what ('swdist stats bw' on each node; MiB of stream bytes, all protocols, by the receiver's relation to the sender):")
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "NODE\tSITE\tOUT\tTO PARENT\tTO CHILDREN\tTO SAME-SITE PEERS\tTO OTHER SITES (PEERS)\tBLOCKS IN\tBLOCKS OUT\tCPU s\t")
	for _, n := range c.all() {
		b, ok := bw[n]
		if !ok {
			fmt.Fprintf(w, "%s\t%s\t?\t\t\t\t\t\t\t\t\n", n.name, n.site)
			continue
		}
		var parent, children, same, other int64
		for _, pt := range b.Peers {
			to := c.byPeer[pt.PeerID]
			switch {
			case pt.Relation == "parent":
				parent += pt.Out
			case pt.Relation == "child":
				children += pt.Out
			case to != nil && to.site == n.site:
				same += pt.Out
			default:
				other += pt.Out
			}
		}
		bl := b.Protocols[blocksProto]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n", n.name, n.site, mib(b.Total.Out), mib(parent), mib(children), mib(same), mib(other), mib(bl.In), mib(bl.Out), sw.cpu[n])
	}
	_ = w.Flush()
	fmt.Printf("CPU seconds include enrollment and start-up; this benchmark's own polling used %.1f s.\n", sw.selfCPU)
	fmt.Printf("Relays' connections to their parent and to each other: %d QUIC, %d TCP.\n", sw.wanLinks["QUIC"], sw.wanLinks["TCP"])
	printWAN(c, bw)
}

// printWAN shows what crossed the WAN between the server and the relays:
// MiB of stream bytes from each (row) to each (column), as the sender
// counted them. A row is what that node's uplink carried to the server and
// the relays: a relay whose row is longer than its siblings' is the one
// the others waited for. A node whose 'stats bw' failed shows "?".
func printWAN(c *cluster, bw map[*node]api.Bandwidth) {
	wan := append([]*node{c.server}, c.relays...)
	fmt.Println("\nAcross the WAN (MiB of stream bytes, from each row to each column):")
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "FROM \\ TO\t")
	for _, n := range wan {
		fmt.Fprintf(w, "%s\t", n.name)
	}
	fmt.Fprintln(w)
	in := make([]int64, len(wan))
	for _, from := range wan {
		fmt.Fprintf(w, "%s\t", from.name)
		if _, ok := bw[from]; !ok {
			fmt.Fprintln(w, strings.Repeat("?\t", len(wan)))
			continue
		}
		out := map[string]int64{}
		for _, pt := range bw[from].Peers {
			out[pt.PeerID] = pt.Out
		}
		for j, to := range wan {
			if to == from {
				fmt.Fprint(w, "-\t")
				continue
			}
			in[j] += out[to.peerID]
			fmt.Fprintf(w, "%s\t", mib(out[to.peerID]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "received\t")
	for j := range wan {
		fmt.Fprintf(w, "%s\t", mib(in[j]))
	}
	fmt.Fprintln(w)
	_ = w.Flush()
}

// mib is b bytes in MiB, to a tenth.
func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// bounds is the lower bound on the time to the last client, and its terms.
type bounds struct {
	serverTerm, downTerm, siteTerm, flatTerm float64 // seconds
	limitTerm                                float64 // seconds: the sites' uplinks' part when the server sends at most 1.1 F
	dMin                                     float64 // Mbit/s
	n                                        int
	lb                                       float64
}

func lowerBound(o options, size int64) bounds {
	fbits := float64(size) * 8
	var b bounds
	b.serverTerm = fbits / (o.r.serverUp * 1e6)
	b.dMin = o.r.lan
	if o.r.siteDown > 0 && (b.dMin == 0 || o.r.siteDown < b.dMin) {
		b.dMin = o.r.siteDown
	}
	if b.dMin > 0 {
		b.downTerm = fbits / (b.dMin * 1e6)
	}
	// Each site must receive the package over the WAN: S·F through the
	// server's and the sites' uplinks.
	s := float64(o.sites)
	b.siteTerm = s * fbits / ((o.r.serverUp + s*o.r.siteUp) * 1e6)
	// Under the server's own target (it sends at most 1.1 F), the sites'
	// uplinks carry the rest of the S·F between them.
	if s > 1.1 {
		b.limitTerm = (s - 1.1) * fbits / (s * o.r.siteUp * 1e6)
	}
	// The N·F/(u_server + Σu_i) over every receiving node, each
	// node's uplink being its LAN port (the site's uplink is counted in
	// siteTerm).
	b.n = o.sites * (o.clients + 1)
	if o.r.lan > 0 {
		b.flatTerm = float64(b.n) * fbits / ((o.r.serverUp + float64(b.n)*o.r.lan) * 1e6)
	}
	b.lb = max(b.serverTerm, b.downTerm, b.siteTerm, b.flatTerm)
	return b
}

func printTable(o options, size int64, sw swResult, h *httpResult) {
	b := lowerBound(o, size)
	f := float64(size)
	fmt.Printf("\nLower bound for F = %.0f MiB, S = %d sites, N = %d receivers (relays and clients), max of:\n", o.sizeMiB, o.sites, b.n)
	fmt.Printf("  F/u_server                         %6.1f s   (u_server = %.0f Mbit/s)\n", b.serverTerm, o.r.serverUp)
	fmt.Printf("  F/d_min                            %6.1f s   (d_min = %.0f Mbit/s)\n", b.downTerm, b.dMin)
	fmt.Printf("  S·F/(u_server + Σ u_site)          %6.1f s   (each site receives F over the WAN; u_site = %.0f Mbit/s)\n", b.siteTerm, o.r.siteUp)
	fmt.Printf("  N·F/(u_server + Σ u_i), u_i = LAN  %6.1f s\n", b.flatTerm)
	fmt.Printf("  = %.1f s\n", b.lb)
	if b.limitTerm > b.lb {
		fmt.Printf("With the server sending at most 1.1 F (its target below), the sites' uplinks carry the rest, at least:\n")
		fmt.Printf("  (S − 1.1)·F/Σ u_site               %6.1f s   (as if the server's 1.1 F and the sites' bytes were all payload)\n", b.limitTerm)
	}
	for i, d := range sw.relayHeld {
		if d > 0 {
			fmt.Printf("Relay of site s%d held the whole package at %.1f s\n", i+1, d.Seconds())
		}
	}

	ratio := func(x uint64) string { return fmt.Sprintf("%.2f×", float64(x)/f) }
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MEASURE\tSWDIST\tHTTP BASELINE\tTARGET\tMET")
	hs := func(fn func(*httpResult) string) string {
		if h == nil {
			return "-"
		}
		return fn(h)
	}
	fmt.Fprintf(w, "last client holds the verified package\t%.1f s\t%s\t\t\n", sw.last.Seconds(), hs(func(h *httpResult) string { return fmt.Sprintf("%.1f s", h.last.Seconds()) }))
	fmt.Fprintf(w, "  the server knew it at\t%.1f s\t\t\t\n", sw.reported.Seconds())
	fmt.Fprintf(w, "first / median client\t%.1f / %.1f s\t%s\t\t\n", sw.first.Seconds(), sw.median.Seconds(),
		hs(func(h *httpResult) string { return fmt.Sprintf("%.1f / %.1f s", h.first.Seconds(), h.median.Seconds()) }))
	fmt.Fprintf(w, "last client ÷ lower bound (%.1f s)\t%.2f\t%s\t≤ 1.3\t%s\n", b.lb, sw.last.Seconds()/b.lb,
		hs(func(h *httpResult) string { return fmt.Sprintf("%.2f", h.last.Seconds()/b.lb) }), yes(sw.last.Seconds() <= 1.3*b.lb))
	if h != nil {
		speed := h.last.Seconds() / sw.last.Seconds()
		want := float64(o.clients) / 1.5
		fmt.Fprintf(w, "HTTP time ÷ swdist time\t%.2f×\t\t≥ %.2f× (clients per site / 1.5)\t%s\n", speed, want, yes(speed >= want))
	}
	fmt.Fprintf(w, "server uplink sent ÷ F\t%s (%s settled)\t%s\t≤ 1.1×\t%s\n", ratio(sw.up.server.tx), ratio(sw.settled.server.tx),
		hs(func(h *httpResult) string { return ratio(h.up.server.tx) }), yes(float64(sw.settled.server.tx) <= 1.1*f))
	for i := range sw.up.sites {
		fmt.Fprintf(w, "site s%d uplink sent ÷ F\t%s (%s settled)\t%s\t≤ 1.1×\t%s\n", i+1, ratio(sw.up.sites[i].tx), ratio(sw.settled.sites[i].tx),
			hs(func(h *httpResult) string { return ratio(h.up.sites[i].tx) }), yes(float64(sw.settled.sites[i].tx) <= 1.1*f))
	}
	for i := range sw.up.sites {
		fmt.Fprintf(w, "site s%d downlink received ÷ F\t%s\t%s\t\t\n", i+1, ratio(sw.settled.sites[i].rx),
			hs(func(h *httpResult) string { return ratio(h.up.sites[i].rx) }))
	}
	_ = w.Flush()
	fmt.Println("\nBytes are what the qdiscs at each end of a link sent: every packet whole, Ethernet, IP and UDP or TCP headers included (5–6 % over the payload over QUIC).")
}

// blockBytes sums the blocks in a node's flatfs store.
func blockBytes(home string) (bytes int64, count int) {
	_ = filepath.WalkDir(filepath.Join(home, "blocks"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".data") {
			return nil
		}
		if info, err := d.Info(); err == nil {
			bytes += info.Size()
			count++
		}
		return nil
	})
	return bytes, count
}

// resume kills one client (SIGKILL, as a crash) once it holds half of the
// package, restarts it, and counts what it fetched beyond what it lacked.
func resume(ctx context.Context, o options, t *topo, c *cluster, key string, p pkgAdded) error {
	victim := c.clients[0][0]
	fmt.Printf("Resume: %s wanbench@1 to role=client; %s is killed when it holds half of the package, then restarted...\n", o.jobType, victim.name)
	t0 := time.Now()
	id, err := createJob(ctx, o, c, key, "role=client")
	if err != nil {
		return err
	}
	half := int64(p.StoredBytes / 2)
	var held int64
	var heldBlocks int
	var killedAt time.Duration
	for {
		b, _ := blockBytes(victim.home)
		if b >= half {
			victim.stop(syscall.SIGKILL, 5*time.Second)
			killedAt = time.Since(t0)
			held, heldBlocks = blockBytes(victim.home)
			break
		}
		if st, err := c.server.api.JobStatus(ctx, id, true); err == nil && final(st.Destinations[victim.peerID]) {
			return fmt.Errorf("%s finished (%s) before it held half of the package: use a larger -size", victim.name, st.Destinations[victim.peerID])
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if held >= int64(p.StoredBytes) {
		return fmt.Errorf("%s held the whole package before it could be killed: use a larger -size", victim.name)
	}
	fmt.Printf("  %5.1f s  killed %s holding %d blocks, %.1f MiB of %.1f MiB (%.0f %%)\n", killedAt.Seconds(), victim.name,
		heldBlocks, float64(held)/(1<<20), float64(p.StoredBytes)/(1<<20), 100*float64(held)/float64(p.StoredBytes))
	time.Sleep(time.Second)
	restart := time.Now()
	if err := c.start(ctx, victim); err != nil {
		return err
	}
	fmt.Printf("  %5.1f s  restarted %s\n", time.Since(t0).Seconds(), victim.name)
	doneAt, st, err := watch(ctx, c, id, t0, nil)
	if err != nil {
		return err
	}
	state := st.Destinations[victim.peerID]
	victimDone := doneAt[victim.peerID]
	how := "the restarted node took its job again by itself"
	if state != "succeeded" {
		// Not resumed by itself: an operator would retry it.
		why := ""
		for _, f := range st.Failed {
			if f.PeerID == victim.peerID {
				why = ": " + f.Reason
			}
		}
		fmt.Printf("  %s ended %s after the restart%s; retrying it ('swdist job retry --peer')\n", victim.name, state, why)
		how = "resumed by 'swdist job retry'"
		var created api.JobCreated
		if err := c.swdist(ctx, c.server, &created, "job", "retry", id, "--peer", victim.peerID, "--sign-key", key); err != nil {
			return err
		}
		var again map[string]time.Duration
		if again, st, err = watch(ctx, c, created.ID, t0, nil); err != nil {
			return err
		}
		victimDone = again[victim.peerID]
		if err := checkSucceeded(st); err != nil {
			return err
		}
	} else if err := checkSucceeded(st); err != nil {
		return err
	}
	end, endBlocks := blockBytes(victim.home)
	// libp2p's bandwidth counters fold new bytes into their totals once a
	// second: read them after that.
	time.Sleep(2 * time.Second)
	bw, err := victim.api.Bandwidth(ctx)
	if err != nil {
		return err
	}
	if data, err := json.MarshalIndent(bw, "", "  "); err == nil {
		_ = os.WriteFile(victim.home+".bw.json", data, 0o644)
	}
	in := bw.Protocols[blocksProto].In
	lacked := end - held
	refetched := in - lacked
	var others []time.Duration
	for peer, d := range doneAt {
		if peer != victim.peerID {
			others = append(others, d)
		}
	}
	_, _, lastOther := spread(others)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\nMEASURE\tFIGURE\tTARGET\tMET")
	fmt.Fprintf(w, "held at the kill\t%d blocks, %d bytes\t\t\n", heldBlocks, held)
	fmt.Fprintf(w, "lacked after the restart\t%d blocks, %d bytes\t\t\n", endBlocks-heldBlocks, lacked)
	fmt.Fprintf(w, "blocks protocol bytes in after the restart\t%d\t\t\n", in)
	fmt.Fprintf(w, "fetched again beyond what it lacked\t%d bytes (%.2f MiB)\t≤ 1 MiB\t%s\n", refetched, float64(refetched)/(1<<20),
		map[bool]string{true: "yes", false: "NO"}[refetched <= 1<<20])
	fmt.Fprintf(w, "restart to holding the package\t%.1f s\t\t\n", (victimDone - restart.Sub(t0)).Seconds())
	fmt.Fprintf(w, "how\t%s\t\t\n", how)
	fmt.Fprintf(w, "the other clients: last done at\t%.1f s\t\t\n", lastOther.Seconds())
	_ = w.Flush()
	fmt.Printf("\nBytes in count the blocks protocol's stream bytes: block data plus about 45 bytes of framing per block (%d blocks: ~%d bytes).\n",
		endBlocks-heldBlocks, 45*(endBlocks-heldBlocks))
	return nil
}

// cpuTimes are the machine's busy and total jiffies (/proc/stat).
type cpuTimes struct{ busy, total uint64 }

func readCPU() cpuTimes {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var t cpuTimes
	for i, f := range strings.Fields(line)[1:] {
		var v uint64
		fmt.Sscan(f, &v)
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t
}

// busySince is the share of CPU time (all cores) spent busy since before.
func (t cpuTimes) busySince(before cpuTimes) float64 {
	if t.total <= before.total {
		return 0
	}
	return 100 * float64(t.busy-before.busy) / float64(t.total-before.total)
}

// cpuOf is the user and system CPU seconds of process pid ("self" for
// this one) so far.
func cpuOf(pid string) float64 {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name in parentheses: utime and stime are
	// the 12th and 13th (fields 14 and 15 of the whole line).
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	var u, s float64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return (u + s) / 100 // USER_HZ
}

func (n *node) cpuSeconds() float64 {
	if n.cmd == nil {
		return 0
	}
	return cpuOf(fmt.Sprint(n.cmd.Process.Pid))
}

// stallAfter is when, after the job is created, -stall-relay stops the
// relay: it is fetching by then, and its siblings wait for its share.
const stallAfter = 2 * time.Second

// stopFor stops node n's process (SIGSTOP) after delay (at once, and
// with its error returned, if delay is 0; else stopped, if set, is told
// how it went) and has it continued (SIGCONT) d after that. cont, for the
// end of the run whatever happens, continues it at once if it is stopped
// and keeps it from being stopped if it is not yet.
func stopFor(n *node, delay, d time.Duration, stopped func(error)) (cont func(), err error) {
	return signalFor(n.cmd.Process, "stop "+n.name, syscall.SIGSTOP, syscall.SIGCONT, delay, d, stopped)
}

// signalFor sends p on after delay and off d after that, as stopFor
// describes (what names the sending of on in its error); end, for the
// end of the run, sends off at once if on went and off is still to go,
// and keeps on from going if it has not yet.
func signalFor(p *os.Process, what string, on, off os.Signal, delay, d time.Duration, told func(error)) (end func(), err error) {
	var (
		mu    sync.Mutex
		ended bool
		undo  *time.Timer
	)
	// send says whether the run had ended already (then it does nothing).
	send := func() (late bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return true, nil
		}
		if err := p.Signal(on); err != nil {
			return false, fmt.Errorf("%s: %w", what, err)
		}
		undo = time.AfterFunc(d, func() { _ = p.Signal(off) })
		return false, nil
	}
	finish := func() {
		mu.Lock()
		defer mu.Unlock()
		ended = true
		if undo != nil && undo.Stop() {
			_ = p.Signal(off)
		}
	}
	if delay <= 0 {
		_, err := send()
		return finish, err
	}
	later := time.AfterFunc(delay, func() {
		if late, err := send(); !late && told != nil {
			told(err)
		}
	})
	return func() { later.Stop(); finish() }, nil
}
