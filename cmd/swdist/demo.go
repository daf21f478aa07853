package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
	"github.com/swdist/swdist/node/inventory"
)

// demoNode is one member of the demo tree as the demo builds it.
type demoNode struct {
	name   string
	role   cert.Role
	site   string
	parent string // name of the parent; empty for the root
	minter string // name of the node that makes its token
}

// demoLayout is the tree the demo builds: a server, a relay under it with a
// relay under that, a second relay under the server, three clients at each
// of three sites. Some tokens are made by the parent itself, some by an
// ancestor, as an operator at the server would.
var demoLayout = []demoNode{
	{name: "server", role: cert.RoleServer, site: "hq"},
	{name: "relay-a", role: cert.RoleRelay, site: "a", parent: "server", minter: "server"},
	{name: "relay-b", role: cert.RoleRelay, site: "b", parent: "server", minter: "server"},
	{name: "relay-c", role: cert.RoleRelay, site: "c", parent: "relay-a", minter: "server"},
	{name: "a1", role: cert.RoleClient, site: "a", parent: "relay-a", minter: "relay-a"},
	{name: "a2", role: cert.RoleClient, site: "a", parent: "relay-a", minter: "relay-a"},
	{name: "a3", role: cert.RoleClient, site: "a", parent: "relay-a", minter: "server"},
	{name: "b1", role: cert.RoleClient, site: "b", parent: "relay-b", minter: "relay-b"},
	{name: "b2", role: cert.RoleClient, site: "b", parent: "relay-b", minter: "relay-b"},
	{name: "b3", role: cert.RoleClient, site: "b", parent: "relay-b", minter: "server"},
	{name: "c1", role: cert.RoleClient, site: "c", parent: "relay-c", minter: "relay-c"},
	{name: "c2", role: cert.RoleClient, site: "c", parent: "relay-c", minter: "relay-a"},
	{name: "c3", role: cert.RoleClient, site: "c", parent: "relay-c", minter: "server"},
}

func (a *app) demoCmd() *cobra.Command {
	var dir string
	var keep, verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a whole tree on this machine and show it, end to end",
		Long: `demo builds a tree on this machine: a server, relays at three levels, and
nine clients across three sites. Each node is a real libp2p host on loopback
with its own home, enrolled with a real one-time token. It prints the tree
as the server sees it, shows that an outsider is refused, and cleans up.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				tmp, err := os.MkdirTemp("", "swdist-demo-")
				if err != nil {
					return err
				}
				dir = tmp
				if !keep {
					defer os.RemoveAll(tmp)
				}
			}
			level := slog.LevelError + 4 // silent
			if verbose {
				level = slog.LevelInfo
			}
			log := slog.New(slog.NewTextHandler(a.errOut, &slog.HandlerOptions{Level: level}))
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			return a.runDemo(ctx, dir, log)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "where to put the nodes' homes (default a temporary directory, removed after)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary homes")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the nodes' logs")
	return cmd
}

type demoResult struct {
	Tree     tree.Node `json:"tree"`
	Outsider string    `json:"outsider"`
	Job      demoJob   `json:"job"`
	// Inventory is what the server sums over every machine of the tree.
	// Install is the status at the server of the demo's install job.
	Install   api.JobStatus   `json:"install"`
	Collect   api.JobFiles    `json:"collect"`
	Inventory []inventory.Sum `json:"inventory"`
	// Lifecycle are the transfer, delete, uninstall and inventory jobs
	// that end the demo.
	Lifecycle []demoStep `json:"lifecycle"`
	Seconds   float64    `json:"seconds"`
}

// demoJob is what the demo's signed job did.
type demoJob struct {
	ID      string   `json:"id"`
	Targets []string `json:"targets"`
	// For lists the nodes that hold the job for themselves, by name.
	For []string `json:"for"`
	// Offline is the node that was offline when the job was sent.
	Offline string `json:"offline"`
	// CaughtUp says whether it held the job after it came back.
	CaughtUp bool `json:"caught_up"`
	// Status is the job's status at the server once every target ran it.
	Status api.JobStatus `json:"status"`
}

func (a *app) runDemo(ctx context.Context, dir string, log *slog.Logger) error {
	start := time.Now()
	say := func(format string, args ...any) {
		if !a.json {
			fmt.Fprintf(a.out, format+"\n", args...)
		}
	}
	listen := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	nodes := map[string]*node.Node{}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	say("Building a tree of %d nodes in %s", len(demoLayout), dir)
	for _, d := range demoLayout {
		h := home.Home{Dir: filepath.Join(dir, d.name)}
		var c cert.Cert
		var err error
		if d.parent == "" {
			if c, err = node.Init(h, node.InitOptions{Role: d.role, Site: d.site, Listen: listen}); err != nil {
				return fmt.Errorf("init %s: %w", d.name, err)
			}
			say("  init   %-8s %-6s site %-3s %s", d.name, d.role, d.site, short(c.PeerID.String()))
		} else {
			parent, minter := nodes[d.parent], nodes[d.minter]
			if parent != minter {
				// The token carries the parent's addresses, which the
				// minter learns when the parent links up.
				if err := waitLinked(ctx, minter, parent.Host().ID().String()); err != nil {
					return fmt.Errorf("token for %s from %s: %w", d.name, d.minter, err)
				}
			}
			tok, err := minter.CreateToken(ctx, api.TokenRequest{Role: string(d.role), Site: d.site,
				Parent: parent.Host().ID().String(), TTL: "10m"})
			if err != nil {
				return fmt.Errorf("token for %s from %s: %w", d.name, d.minter, err)
			}
			if c, err = node.Join(ctx, h, node.JoinOptions{Token: tok.Token, Listen: listen}); err != nil {
				return fmt.Errorf("join %s: %w", d.name, err)
			}
			say("  joined %-8s %-6s site %-3s %s under %s (token from %s)", d.name, d.role, d.site, short(c.PeerID.String()), d.parent, d.minter)
		}
		n, err := node.Open(ctx, h, node.Options{Logger: log.With("node", d.name), NoAPI: true})
		if err != nil {
			return fmt.Errorf("open %s: %w", d.name, err)
		}
		nodes[d.name] = n
		if err := n.Start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", d.name, err)
		}
	}
	server := nodes["server"]
	t, err := waitOnline(ctx, server, len(demoLayout))
	if err != nil {
		return err
	}
	say("\nThe tree as the server sees it ('swdist tree'):\n")
	if !a.json {
		printTree(a.out, t, false, nil)
	}
	outsider, err := tryOutsider(ctx, server)
	if err != nil {
		return err
	}
	say("\nAn outsider without a certificate: %s", outsider)
	job, err := a.demoJob(ctx, dir, nodes, say, log)
	if err != nil {
		return err
	}
	install, err := a.demoInstall(ctx, dir, nodes, say)
	if err != nil {
		return err
	}
	collect, err := a.demoCollect(ctx, dir, nodes, say)
	if err != nil {
		return err
	}
	inv, err := a.demoInventory(ctx, nodes, say)
	if err != nil {
		return err
	}
	life, err := a.demoLifecycle(ctx, dir, nodes, say)
	if err != nil {
		return err
	}
	res := demoResult{Tree: t, Outsider: outsider, Job: job, Install: install, Collect: collect, Inventory: inv, Lifecycle: life,
		Seconds: time.Since(start).Seconds()}
	say("\nDemo finished in %.1fs.", res.Seconds)
	if a.json {
		return a.emit(res, nil)
	}
	return nil
}

// waitLinked polls n's view of its subtree until the node id is online in
// it.
func waitLinked(ctx context.Context, n *node.Node, id string) error {
	var online func(t tree.Node) bool
	online = func(t tree.Node) bool {
		if t.PeerID == id {
			return t.Online
		}
		return slices.ContainsFunc(t.Children, online)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if t, err := n.Tree(ctx, -1); err == nil && online(t) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not come online: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitOnline polls the root's view until want nodes are online.
func waitOnline(ctx context.Context, root *node.Node, want int) (tree.Node, error) {
	for {
		t, err := root.Tree(ctx, -1)
		if err != nil {
			return tree.Node{}, err
		}
		if n := t.CountOnline(); n == want {
			return t, nil
		} else if ctx.Err() != nil {
			return t, fmt.Errorf("only %d of %d nodes came online: %w", n, want, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryOutsider connects a libp2p host that holds no certificate to the
// server and asks it for the tree: it must be refused.
func tryOutsider(ctx context.Context, server *node.Node) (string, error) {
	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		return "", err
	}
	defer h.Close()
	sh := server.Host()
	if err := h.Connect(ctx, peer.AddrInfo{ID: sh.ID(), Addrs: sh.Addrs()}); err != nil {
		return "refused at connection: " + err.Error(), nil
	}
	s, err := h.NewStream(ctx, sh.ID(), tree.Protocol)
	if err == nil {
		s.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err = s.Read(make([]byte, 1))
		s.Reset()
	}
	if err == nil {
		return "", fmt.Errorf("outsider got an answer from the tree protocol")
	}
	return "it connected and asked for the tree: its stream was reset, and the connection is closed when the hello timeout passes", nil
}

// demoJob has an administrator sign a job for the clients of site c while
// c2 is offline, shows which nodes hold it, and brings c2 back.
func (a *app) demoJob(ctx context.Context, dir string, nodes map[string]*node.Node, say func(string, ...any), log *slog.Logger) (demoJob, error) {
	keyPath := filepath.Join(dir, "alice.key")
	key, err := home.NewKey()
	if err != nil {
		return demoJob{}, err
	}
	if err := home.WriteKey(keyPath, key); err != nil {
		return demoJob{}, err
	}
	if err := home.WritePub(keyPath+".pub", key.GetPublic()); err != nil {
		return demoJob{}, err
	}
	pub, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		return demoJob{}, err
	}
	adm, err := nodes["server"].CertifyAdmin(ctx, api.AdminRequest{Name: "alice", PubKey: string(pub)})
	if err != nil {
		return demoJob{}, fmt.Errorf("certify the demo's admin: %w", err)
	}
	if err := os.WriteFile(keyPath+".cert", []byte(adm.Cert), 0o644); err != nil {
		return demoJob{}, err
	}
	say("\nAdmin alice's key is certified by the server for the whole tree ('swdist admin add').")
	offline := "c2"
	if err := nodes[offline].Close(); err != nil {
		return demoJob{}, err
	}
	delete(nodes, offline)
	f := jobFlags{typ: "run", command: "uname -a", timeout: time.Minute, expires: time.Hour,
		targets: []string{"site=c", "role=client"}, signKey: keyPath}
	raw, m, err := f.sign()
	if err != nil {
		return demoJob{}, err
	}
	created, err := nodes["server"].SubmitJob(ctx, api.JobSubmit{Manifest: raw})
	if err != nil {
		return demoJob{}, err
	}
	say("Alice signs job %s (run %q, targets %s) while %s is offline ('swdist job create').", short(m.JobID), f.command, m.Target, offline)
	forNode := func(n *node.Node) (held, forMe bool) {
		jobs, _ := n.ListJobs(ctx)
		for _, j := range jobs {
			if j.ID == created.ID {
				return true, j.ForThisNode
			}
		}
		return false, false
	}
	// Wait until the online targets hold it, then show every node.
	for {
		_, c1 := forNode(nodes["c1"])
		_, c3 := forNode(nodes["c3"])
		if c1 && c3 {
			break
		}
		if ctx.Err() != nil {
			return demoJob{}, fmt.Errorf("the job did not reach c1 and c3: %w", ctx.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let anything wrongly sent arrive too
	res := demoJob{ID: created.ID, Targets: created.Targets, Offline: offline}
	say("\nWho holds the job ('swdist job ls' on each node):")
	for _, d := range demoLayout {
		n, up := nodes[d.name]
		state := "offline"
		if up {
			switch held, forMe := forNode(n); {
			case forMe:
				state = "holds it: it is for this node"
				res.For = append(res.For, d.name)
			case held:
				state = "holds it, to pass on"
			default:
				state = "-"
			}
		}
		say("  %-8s %-6s site %-3s %s", d.name, d.role, d.site, state)
	}
	n, err := node.Open(ctx, home.Home{Dir: filepath.Join(dir, offline)}, node.Options{Logger: log.With("node", offline), NoAPI: true})
	if err != nil {
		return demoJob{}, err
	}
	nodes[offline] = n
	if err := n.Start(ctx); err != nil {
		return demoJob{}, err
	}
	for !res.CaughtUp && ctx.Err() == nil {
		_, res.CaughtUp = forNode(n)
		time.Sleep(50 * time.Millisecond)
	}
	if !res.CaughtUp {
		return demoJob{}, fmt.Errorf("%s did not catch up on the job", offline)
	}
	res.For = append(res.For, offline)
	say("%s comes back and catches up from its relay: it holds the job now.", offline)
	// Each target runs it and reports up; the server counts.
	for ctx.Err() == nil {
		st, err := nodes["server"].JobStatus(ctx, created.ID, false)
		if err == nil && st.Counts["succeeded"] == len(res.For) {
			res.Status = st
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return demoJob{}, fmt.Errorf("the job did not succeed on %v: %w", res.For, ctx.Err())
	}
	say("\nThe clients ran it and reported up the tree ('swdist job status' on the server):\n")
	if !a.json {
		printJobStatus(a.out, res.Status)
	}
	return res, nil
}

// demoShelves are the custom inventory fields the demo sets on some
// clients, as an operator would with 'swdist inventory set'.
var demoShelves = map[string]string{"a1": "front", "a2": "front", "b1": "back", "c1": "front", "c3": "back"}

// demoInventory sets a custom field on some clients and shows the server's
// sums over the whole tree once every machine has reported.
func (a *app) demoInventory(ctx context.Context, nodes map[string]*node.Node, say func(string, ...any)) ([]inventory.Sum, error) {
	for name, where := range demoShelves {
		if _, err := nodes[name].InventorySet(ctx, api.CustomRequest{Key: "counter", Value: where}); err != nil {
			return nil, fmt.Errorf("inventory set on %s: %w", name, err)
		}
	}
	server := nodes["server"]
	queries := []api.InventoryQuery{
		{By: []string{"os.name", "os.version"}},
		{By: []string{"custom.counter"}, Where: []string{"role=client"}},
		{By: []string{"software.name", "software.version"}, Where: []string{"software.source=swdist"}},
	}
	var sums []inventory.Sum
	for {
		sums = sums[:0]
		for _, q := range queries {
			s, err := server.InventorySum(ctx, q)
			if err != nil {
				sums = nil
				break
			}
			sums = append(sums, s)
		}
		if len(sums) == len(queries) && sums[0].Machines == len(demoLayout) && counted(sums[1]) == len(demoShelves) && sums[2].Machines == demoInstalls {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for every machine's inventory at the server: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	say("\nInventory at the server, every machine ('swdist inventory sum --by os.name --by os.version'):\n")
	if !a.json {
		printSum(a.out, sums[0], nil)
	}
	say("\nA custom field set on %d clients ('swdist inventory set counter front' there; here\n'swdist inventory sum --by custom.counter --where role=client'):\n", len(demoShelves))
	if !a.json {
		printSum(a.out, sums[1], nil)
	}
	say("\nSoftware installed by swdist ('swdist inventory sum --by software.name --by software.version\n--where software.source=swdist'):\n")
	if !a.json {
		printSum(a.out, sums[2], nil)
	}
	return sums, nil
}

// counted is how many machines of a sum have a value.
func counted(s inventory.Sum) int {
	n := 0
	for _, r := range s.Rows {
		if r.Value != inventory.None {
			n += r.Count
		}
	}
	return n
}

// demoInstalls is how many machines the demo's install job targets.
const demoInstalls = 3

// demoInstall adds a package on the server and has alice install it on the
// clients of site b: each fetches it from its relay, which fetched it once
// from the server.
func (a *app) demoInstall(ctx context.Context, dir string, nodes map[string]*node.Node, say func(string, ...any)) (api.JobStatus, error) {
	src := filepath.Join(dir, "hello-src")
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		return api.JobStatus{}, err
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "hello"), []byte("#!/bin/sh\necho hello from swdist\n"), 0o755); err != nil {
		return api.JobStatus{}, err
	}
	server := nodes["server"]
	bs, err := blocks.Open(filepath.Join(dir, "server", "blocks"))
	if err != nil {
		return api.JobStatus{}, err
	}
	res, err := pkg.Build(ctx, src, "hello", "1.0", bs, pkg.BuildOptions{})
	bs.Close()
	if err != nil {
		return api.JobStatus{}, err
	}
	p, err := server.AddPackage(ctx, api.Package{CID: res.Root.String()})
	if err != nil {
		return api.JobStatus{}, err
	}
	say("\nPackage hello@1.0 added on the server: %s ('swdist package add').", p.CID)
	f := jobFlags{typ: "install", pkg: p.CID, script: "./bin/hello > hello.log", timeout: time.Minute, expires: time.Hour,
		targets: []string{"site=b", "role=client"}, signKey: filepath.Join(dir, "alice.key"),
		resolve: func(ref string) (api.Package, error) { return server.FindPackage(ctx, ref) }}
	st, m, err := demoSubmit(ctx, server, f, demoInstalls)
	if err != nil {
		return st, err
	}
	say("Alice installs it on %s (job %s, 'swdist job create --type install'): %s.", m.Target, short(m.JobID), statusLine(st))
	return st, nil
}
