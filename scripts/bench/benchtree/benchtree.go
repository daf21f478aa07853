// Package benchtree builds, for benchmarks, a tree of real swdist nodes in
// one process on loopback: a server, relays under it, clients under each
// relay, each enrolled with a real one-time token. The nodes run without
// real inventory collectors: a thousand machines in one process must not
// each run dpkg.
package benchtree

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
	"github.com/swdist/swdist/node/inventory"
)

// Tree is the nodes, by name: "server", "r00"…, "r00-c000"….
type Tree struct {
	dir string
	log *slog.Logger
	// OnManifest, if set, is told when the node name accepts a manifest
	// for itself.
	OnManifest func(name, job string)

	mu    sync.Mutex
	nodes map[string]*node.Node
}

// New makes an empty tree whose homes go under dir.
func New(dir string) *Tree {
	return &Tree{dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil)), nodes: map[string]*node.Node{}}
}

// Node is the running node name (nil if it is not running).
func (t *Tree) Node(name string) *node.Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nodes[name]
}

// Nodes is every running node, by name.
func (t *Tree) Nodes() map[string]*node.Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]*node.Node, len(t.nodes))
	for k, v := range t.nodes {
		out[k] = v
	}
	return out
}

// Stop closes the node name, which keeps its home.
func (t *Tree) Stop(name string) error {
	t.mu.Lock()
	n := t.nodes[name]
	delete(t.nodes, name)
	t.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Close()
}

// Close stops every node.
func (t *Tree) Close() {
	for name := range t.Nodes() {
		t.Stop(name)
	}
}

// Open starts the node whose home is dir/name.
func (t *Tree) Open(ctx context.Context, name string) (*node.Node, error) {
	n, err := node.Open(ctx, home.Home{Dir: filepath.Join(t.dir, name)}, node.Options{NoAPI: true, Logger: t.log,
		InventoryCollectors: []inventory.Collector{},
		OnManifest: func(job string, forMe bool) {
			if forMe && t.OnManifest != nil {
				t.OnManifest(name, job)
			}
		}})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.nodes[name] = n
	t.mu.Unlock()
	return n, n.Start(ctx)
}

// Join enrolls name under parent with a token parent makes, and starts it.
func (t *Tree) Join(ctx context.Context, parent *node.Node, name string, role cert.Role, site string) error {
	tok, err := parent.CreateToken(ctx, api.TokenRequest{Role: string(role), Site: site})
	if err != nil {
		return err
	}
	if _, err := node.Join(ctx, home.Home{Dir: filepath.Join(t.dir, name)}, node.JoinOptions{Token: tok.Token,
		Listen: []string{"/ip4/127.0.0.1/tcp/0"}}); err != nil {
		return fmt.Errorf("join %s: %w", name, err)
	}
	_, err = t.Open(ctx, name)
	return err
}

// Build makes the server, relays under it (each its own site) and clients
// under each relay, 32 enrollments at a time. It returns the server and
// the clients' names.
func (t *Tree) Build(ctx context.Context, relays, clients int) (*node.Node, []string, error) {
	if _, err := node.Init(home.Home{Dir: filepath.Join(t.dir, "server")}, node.InitOptions{Role: cert.RoleServer, Site: "hq",
		Listen: []string{"/ip4/127.0.0.1/tcp/0"}}); err != nil {
		return nil, nil, err
	}
	server, err := t.Open(ctx, "server")
	if err != nil {
		return nil, nil, err
	}
	for r := range relays {
		name := fmt.Sprintf("r%02d", r)
		if err := t.Join(ctx, server, name, cert.RoleRelay, name); err != nil {
			return nil, nil, err
		}
	}
	var names []string
	sem := make(chan struct{}, 32)
	errs := make(chan error, relays*clients)
	var wg sync.WaitGroup
	for r := range relays {
		relay := t.Node(fmt.Sprintf("r%02d", r))
		for c := range clients {
			name := fmt.Sprintf("r%02d-c%03d", r, c)
			names = append(names, name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := t.Join(ctx, relay, name, cert.RoleClient, fmt.Sprintf("r%02d", r)); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, nil, err
	}
	time.Sleep(3 * time.Second) // let subscriptions settle
	return server, names, nil
}

// Admin makes an administrator's key and has the server certify it for
// the whole tree.
func (t *Tree) Admin(ctx context.Context, server *node.Node) (crypto.PrivKey, admin.Signed, error) {
	key, err := home.NewKey()
	if err != nil {
		return nil, admin.Signed{}, err
	}
	pub := filepath.Join(t.dir, "admin.pub")
	if err := home.WritePub(pub, key.GetPublic()); err != nil {
		return nil, admin.Signed{}, err
	}
	pubText, err := os.ReadFile(pub)
	if err != nil {
		return nil, admin.Signed{}, err
	}
	c, err := server.CertifyAdmin(ctx, api.AdminRequest{Name: "bench", PubKey: string(pubText)})
	if err != nil {
		return nil, admin.Signed{}, err
	}
	adm, err := node.ReadAdminCertText([]byte(c.Cert))
	return key, adm, err
}
