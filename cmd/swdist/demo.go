package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
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
	Seconds  float64   `json:"seconds"`
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
		printTree(a.out, t, false)
	}
	outsider, err := tryOutsider(ctx, server)
	if err != nil {
		return err
	}
	say("\nAn outsider without a certificate: %s", outsider)
	res := demoResult{Tree: t, Outsider: outsider, Seconds: time.Since(start).Seconds()}
	say("\nDemo finished in %.1fs.", res.Seconds)
	if a.json {
		return a.emit(res, nil)
	}
	return nil
}

// waitOnline polls the root's view until want nodes are online.
func waitOnline(ctx context.Context, root *node.Node, want int) (tree.Node, error) {
	for {
		t, err := root.Tree(ctx, -1)
		if err != nil {
			return tree.Node{}, err
		}
		if n := countOnline(t); n == want {
			return t, nil
		} else if ctx.Err() != nil {
			return t, fmt.Errorf("only %d of %d nodes came online: %w", n, want, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countOnline(t tree.Node) int {
	n := 0
	if t.Online {
		n++
	}
	for _, c := range t.Children {
		n += countOnline(c)
	}
	return n
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
