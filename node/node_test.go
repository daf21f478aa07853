package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/home"
)

var loopback = []string{"/ip4/127.0.0.1/tcp/0"}

// cluster is a tree of real nodes in this process, each a libp2p host on
// loopback with its own home.
type cluster struct {
	t     *testing.T
	dir   string
	nodes map[string]*node.Node
	// tweak adjusts every node's config before it first starts.
	tweak func(*config.Config)
	// blockTimeout, if set, bounds each request for blocks.
	blockTimeout time.Duration
	// peerQuiet, if set, is how long a peer owing blocks may send nothing
	// before it is pinged.
	peerQuiet time.Duration
	// peerStuck, if set, is how long a request for blocks waits for a peer
	// that sends nothing for it.
	peerStuck time.Duration
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), nodes: map[string]*node.Node{}}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Close()
		}
	})
	return c
}

func (c *cluster) home(name string) home.Home { return home.Home{Dir: filepath.Join(c.dir, name)} }

// quiet discards the nodes' logs, unless SWDIST_TEST_LOG is set (to debug
// a test: the logs then go to standard error).
func quiet() *slog.Logger {
	if os.Getenv("SWDIST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (c *cluster) start(name string) *node.Node {
	c.t.Helper()
	h := c.home(name)
	if c.tweak != nil {
		cfg, err := config.Load(h.Config())
		if err != nil {
			c.t.Fatal(err)
		}
		c.tweak(&cfg)
		if err := config.Save(h.Config(), cfg); err != nil {
			c.t.Fatal(err)
		}
	}
	n, err := node.Open(context.Background(), h, node.Options{NoAPI: true, Logger: quiet().With("node", name), BlockTimeout: c.blockTimeout, PeerQuiet: c.peerQuiet,
		PeerStuck: c.peerStuck})
	if err != nil {
		c.t.Fatalf("open %s: %v", name, err)
	}
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.nodes[name] = n
	return n
}

func (c *cluster) root(name string, role cert.Role, lifetime time.Duration) *node.Node {
	c.t.Helper()
	if _, err := node.Init(c.home(name), node.InitOptions{Role: role, Site: "hq", Listen: loopback, CertLifetime: lifetime}); err != nil {
		c.t.Fatal(err)
	}
	return c.start(name)
}

// token asks minter for a token for a child of parent.
func (c *cluster) token(minter, parent string, role cert.Role, site string) string {
	c.t.Helper()
	tok, err := c.nodes[minter].CreateToken(context.Background(), api.TokenRequest{
		Role: string(role), Parent: c.nodes[parent].Host().ID().String(), Site: site})
	if err != nil {
		c.t.Fatalf("token from %s for a child of %s: %v", minter, parent, err)
	}
	return tok.Token
}

func (c *cluster) join(name, parent string, role cert.Role, site string) *node.Node {
	c.t.Helper()
	if _, err := node.Join(context.Background(), c.home(name), node.JoinOptions{Token: c.token(parent, parent, role, site), Listen: loopback}); err != nil {
		c.t.Fatalf("join %s: %v", name, err)
	}
	return c.start(name)
}

func (c *cluster) id(name string) peer.ID { return c.nodes[name].Host().ID() }

// eventually polls cond until it holds, bounded.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, cond, nil)
}

// waitFor is eventually, and its failure says what last (if not nil)
// tells of the last look.
func waitFor(t *testing.T, what string, cond func() bool, last func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			if last != nil {
				t.Fatalf("timed out waiting until %s; %s", what, last())
			}
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func find(t tree.Node, id peer.ID) (tree.Node, bool) {
	if t.PeerID == id.String() {
		return t, true
	}
	for _, c := range t.Children {
		if f, ok := find(c, id); ok {
			return f, true
		}
	}
	return tree.Node{}, false
}

func onlineIn(n *node.Node, id peer.ID) bool {
	t, _ := n.Tree(context.Background(), -1)
	f, ok := find(t, id)
	return ok && f.Online
}

// oneClient builds server → relay-a → a1 in c (its tweaks set) and waits
// until they are online and a1 knows the server as its ancestor (whom it
// falls back to, and without whom its relay is its only source).
func (c *cluster) oneClient() {
	c.t.Helper()
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	c.join("a1", "relay-a", cert.RoleClient, "a")
	for _, name := range []string{"relay-a", "a1"} {
		eventually(c.t, name+" online", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
	}
	eventually(c.t, "a1 knows its ancestors", c.nodes["a1"].KnowsAncestors)
}

// standard builds server → relay-a → {a1, a2}, server → relay-b → b1.
func standard(t *testing.T) *cluster {
	c := newCluster(t)
	c.root("server", cert.RoleServer, 0)
	c.join("relay-a", "server", cert.RoleRelay, "a")
	c.join("relay-b", "server", cert.RoleRelay, "b")
	c.join("a1", "relay-a", cert.RoleClient, "a")
	c.join("a2", "relay-a", cert.RoleClient, "a")
	c.join("b1", "relay-b", cert.RoleClient, "b")
	for _, name := range []string{"relay-a", "relay-b", "a1", "a2", "b1"} {
		eventually(t, name+" is online at the server", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
	}
	return c
}

func TestTreeView(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	top, _ := c.nodes["server"].Tree(ctx, -1)
	if top.Role != "server" || top.ChildrenCount != 2 || len(top.Children) != 2 {
		t.Fatalf("server view: role %s, %d children listed of %d", top.Role, len(top.Children), top.ChildrenCount)
	}
	ra, _ := find(top, c.id("relay-a"))
	if ra.Site != "a" || ra.ChildrenCount != 2 || len(ra.Children) != 2 {
		t.Errorf("relay-a in server view: site %s, %d of %d children", ra.Site, len(ra.Children), ra.ChildrenCount)
	}
	shallow, _ := c.nodes["server"].Tree(ctx, 1)
	ra, _ = find(shallow, c.id("relay-a"))
	if ra.ChildrenCount != 2 || len(ra.Children) != 0 {
		t.Errorf("depth 1: relay-a lists %d children of %d, want none of 2", len(ra.Children), ra.ChildrenCount)
	}
	// A relay answers for its own subtree.
	sub, _ := c.nodes["relay-a"].Tree(ctx, -1)
	if sub.PeerID != c.id("relay-a").String() || len(sub.Children) != 2 {
		t.Errorf("relay-a's own view: top %s with %d children", sub.PeerID, len(sub.Children))
	}
}

func TestTokenRules(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	// The API mints only for parents in this node's subtree.
	_, err := c.nodes["relay-b"].CreateToken(ctx, api.TokenRequest{Role: "client", Parent: c.id("relay-a").String()})
	if err == nil || !strings.Contains(err.Error(), "not in this node's subtree") {
		t.Errorf("relay-b minting for relay-a through the API: %v", err)
	}
	// A token that relay-b signs anyway for a child of relay-a is refused
	// by relay-a: relay-b is not one of its ancestors.
	key, err := home.ReadKey(c.home("relay-b").NodeKey())
	if err != nil {
		t.Fatal(err)
	}
	ra := c.nodes["relay-a"]
	forged, err := cert.Token{Org: ra.Cert().Org, Parent: ra.Host().ID(), Addrs: ra.Host().Addrs(), Role: cert.RoleClient,
		Site: "a", ExpiresAt: time.Now().Add(time.Hour), Nonce: cert.NewNonce(), Issuer: c.id("relay-b")}.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.Join(ctx, c.home("forged"), node.JoinOptions{Token: forged, Listen: loopback})
	if err == nil || !strings.Contains(err.Error(), "not this node nor one of its ancestors") {
		t.Errorf("token minted by a non-ancestor: %v", err)
	}
	// A token is good for one node.
	tok := c.token("relay-b", "relay-b", cert.RoleClient, "b")
	if _, err := node.Join(ctx, c.home("x"), node.JoinOptions{Token: tok, Listen: loopback}); err != nil {
		t.Fatalf("an honest token failed: %v", err)
	}
	_, err = node.Join(ctx, c.home("y"), node.JoinOptions{Token: tok, Listen: loopback})
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second use of a token: %v", err)
	}
	for _, name := range []string{"forged", "y"} {
		if c.home(name).Initialised() {
			t.Errorf("a refused join wrote the home %s", name)
		}
	}
}

func TestRevokeSpreadsThroughTree(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	a1 := c.id("a1")
	if _, err := c.nodes["server"].Revoke(ctx, api.RevokeRequest{Peer: a1.String(), Reason: "stolen laptop"}); err != nil {
		t.Fatal(err)
	}
	// a1's parent drops it, and it stays out.
	eventually(t, "relay-a disconnects a1", func() bool {
		return c.nodes["relay-a"].Host().Network().Connectedness(a1) != network.Connected
	})
	eventually(t, "relay-a shows a1 revoked (gone from the tree)", func() bool {
		top, _ := c.nodes["relay-a"].Tree(ctx, -1)
		_, ok := find(top, a1)
		return !ok
	})
	// Every node holds the revocation: relay-b, which never had a1 as a
	// child, refuses it too.
	refuses(t, c, "relay-b", "a1")
	// a2, not revoked, is untouched.
	if !onlineIn(c.nodes["server"], c.id("a2")) {
		t.Error("a2 went offline")
	}
}

// refuses waits until node to no longer keeps a connection from node from:
// each try dials it and gives the hello a moment to be refused.
func refuses(t *testing.T, c *cluster, to, from string) {
	t.Helper()
	th, fh := c.nodes[to].Host(), c.nodes[from].Host()
	eventually(t, to+" refuses "+from, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = fh.Connect(ctx, peer.AddrInfo{ID: th.ID(), Addrs: th.Addrs()})
		time.Sleep(200 * time.Millisecond)
		return th.Network().Connectedness(fh.ID()) != network.Connected
	})
}

func TestRevokedRelayCutsOffSubtree(t *testing.T) {
	c := standard(t)
	ctx := context.Background()
	if _, err := c.nodes["server"].Revoke(ctx, api.RevokeRequest{Peer: c.id("relay-b").String()}); err != nil {
		t.Fatal(err)
	}
	// b1's chain contains relay-b's certificate: the server refuses b1 too.
	refuses(t, c, "server", "b1")
	if !onlineIn(c.nodes["server"], c.id("a1")) {
		t.Error("a1, under another relay, went offline")
	}
}

func TestRevokeOutsideSubtreeRefused(t *testing.T) {
	c := standard(t)
	_, err := c.nodes["relay-a"].Revoke(context.Background(), api.RevokeRequest{Peer: c.id("b1").String()})
	var ae *api.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "not in this node's subtree") {
		t.Errorf("relay-a revoking b1: %v", err)
	}
}

func TestDepartmentServer(t *testing.T) {
	c := newCluster(t)
	c.root("dept", cert.RoleRelay, 0)
	c.join("r", "dept", cert.RoleRelay, "x")
	c.join("x1", "r", cert.RoleClient, "x")
	eventually(t, "x1 online at the department server", func() bool { return onlineIn(c.nodes["dept"], c.id("x1")) })
	top, _ := c.nodes["dept"].Tree(context.Background(), -1)
	if top.Role != "relay" {
		t.Errorf("department server's role = %s, want relay", top.Role)
	}
}

// TestRenewal runs a tree whose certificates live 12 s and checks that every
// node's certificate is renewed before it expires.
func TestRenewal(t *testing.T) {
	c := newCluster(t)
	c.root("server", cert.RoleServer, 12*time.Second)
	c.join("relay", "server", cert.RoleRelay, "a")
	c.join("client", "relay", cert.RoleClient, "a")
	eventually(t, "client online", func() bool { return onlineIn(c.nodes["server"], c.id("client")) })
	first := map[string]time.Time{}
	for name, n := range c.nodes {
		first[name], _ = n.Chain().NotAfter()
	}
	for name, n := range c.nodes {
		eventually(t, name+" renews its certificate", func() bool {
			end, _ := n.Chain().NotAfter()
			return end.After(first[name])
		})
	}
	// The renewed chains are stored: the client's home holds the new one.
	stored, err := home.ReadChain(c.home("client").Cert())
	if err != nil {
		t.Fatal(err)
	}
	end, _ := stored.NotAfter()
	if !end.After(first["client"]) {
		t.Errorf("stored certificate expires %s, not after the first %s", end, first["client"])
	}
	if !onlineIn(c.nodes["server"], c.id("client")) {
		t.Error("client went offline during renewal")
	}
}

// TestRelayRestart closes a relay and opens it again from its home: its
// children reconnect by themselves.
func TestRelayRestart(t *testing.T) {
	c := standard(t)
	c.tweak = nil
	if err := c.nodes["relay-a"].Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay-a shown offline", func() bool { return !onlineIn(c.nodes["server"], c.id("relay-a")) })
	c.start("relay-a")
	for _, name := range []string{"relay-a", "a1", "a2"} {
		eventually(t, name+" back online", func() bool { return onlineIn(c.nodes["server"], c.id(name)) })
	}
}

// TestJoinWhileTheParentRestarts: a node joins while its parent is down
// for a moment (restarting, on the same address): the first dials fail,
// after which libp2p holds dials to that peer off for 5 s and more, yet
// the join's later tries dial it again and join once it is back.
func TestJoinWhileTheParentRestarts(t *testing.T) {
	c := newCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	c.tweak = func(cfg *config.Config) { cfg.Listen = []string{addr} }
	c.root("server", cert.RoleServer, 0)
	c.tweak = nil
	tok := c.token("server", "server", cert.RoleClient, "a")
	c.nodes["server"].Close()
	delete(c.nodes, "server")

	back := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		n, err := node.Open(context.Background(), c.home("server"), node.Options{NoAPI: true, Logger: quiet()})
		if err == nil {
			if err = n.Start(context.Background()); err != nil {
				n.Close()
			}
		}
		if err == nil {
			c.nodes["server"] = n // read only after <-back
		}
		back <- err
	}()
	_, jerr := node.Join(context.Background(), c.home("b1"), node.JoinOptions{Token: tok, Listen: loopback})
	if err := <-back; err != nil {
		t.Fatalf("restart the server: %v", err)
	}
	if jerr != nil {
		t.Fatalf("join while the parent restarts: %v", jerr)
	}
}
