package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
)

// A node is one 'swdist run' process in its own namespace, with its own
// home.
type node struct {
	name, ns, home, ip string
	role, site         string
	siteIdx            int // 0 for the server, 1.. for the sites
	peerID             string
	cmd                *exec.Cmd
	exited             chan struct{}
	api                *api.Client
}

type cluster struct {
	bin, dir string
	logLevel string // written into each node's config before it starts, if set
	qlog     bool   // the server and relays write qlogs
	l        *ledger
	server   *node
	relays   []*node   // by site
	clients  [][]*node // by site
	byPeer   map[string]*node
	disk     *frozenDisk // the last relay's block store, with -hang-relay-disk
}

func (c *cluster) all() []*node {
	out := []*node{c.server}
	for i := range c.relays {
		out = append(out, c.relays[i])
		out = append(out, c.clients[i]...)
	}
	return out
}

func (c *cluster) allClients() []*node {
	var out []*node
	for _, cs := range c.clients {
		out = append(out, cs...)
	}
	return out
}

// swdist runs the CLI in n's namespace; out, if set, receives its --json
// document.
func (c *cluster) swdist(ctx context.Context, n *node, out any, args ...string) error {
	args = append(args, "--home", n.home)
	if out != nil {
		args = append(args, "--json")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, c.bin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: swdist %s: %v: %s", n.name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			return fmt.Errorf("%s: swdist %s: %v in %q", n.name, args[0], err, stdout.String())
		}
	}
	return nil
}

// start runs n's daemon and waits until its control API answers.
func (c *cluster) start(ctx context.Context, n *node) error {
	if c.logLevel != "" {
		cfg := filepath.Join(n.home, "config.toml")
		b, err := os.ReadFile(cfg)
		if err != nil {
			return err
		}
		b = regexp.MustCompile(`(?m)^level = .*$`).ReplaceAll(b, []byte(fmt.Sprintf("level = %q", c.logLevel)))
		if err := os.WriteFile(cfg, b, 0o600); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(n.home+".out", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", n.ns, c.bin, "run", "--home", n.home)
	cmd.Stdout, cmd.Stderr = logf, logf
	if c.qlog && n.role != "client" {
		if err := os.MkdirAll(qlogDir(n), 0o755); err != nil {
			logf.Close()
			return err
		}
		cmd.Env = append(os.Environ(), "QLOGDIR="+qlogDir(n))
	}
	// Its own process group: a Ctrl-C on the terminal reaches this
	// program, which stops the daemons itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	c.l.add("pid", fmt.Sprint(cmd.Process.Pid))
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(n.exited) }()
	n.api = api.NewClient(filepath.Join(n.home, "api.sock"))
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		id, err := n.api.ID(cctx)
		cancel()
		if err == nil {
			n.peerID = id.PeerID
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("%s: the daemon exited: see %s.out and %s/logs", n.name, n.home, n.home)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop ends n's daemon: SIGTERM, then SIGKILL after grace.
func (n *node) stop(sig syscall.Signal, grace time.Duration) {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(grace):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}

func (c *cluster) stopAll() {
	nodes := c.all()
	done := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		go func() { n.stop(syscall.SIGTERM, 10*time.Second); done <- struct{}{} }()
	}
	for range nodes {
		<-done
	}
}

// buildCluster enrolls every node with a real one-time token and starts
// it: the server, then each site's relay (token from the server), then its
// clients (tokens from the relay).
// With freezable, the last site's relay keeps its block store on a
// freezefs (c.disk).
func buildCluster(ctx context.Context, t *topo, bin, dir, logLevel, transport string, qlog, freezable bool, l *ledger) (*cluster, error) {
	c := &cluster{bin: bin, dir: dir, logLevel: logLevel, qlog: qlog, l: l, byPeer: map[string]*node{}}
	listen := func(ip string) []string {
		var out []string
		if transport != "quic" {
			out = append(out, "--listen", "/ip4/"+ip+"/tcp/7400")
		}
		if transport != "tcp" {
			out = append(out, "--listen", "/ip4/"+ip+"/udp/7400/quic-v1")
		}
		return out
	}
	c.server = &node{name: "server", ns: t.server, home: filepath.Join(dir, "server"), ip: t.serverIP(), role: "server", site: "hq"}
	if err := c.swdist(ctx, c.server, nil, append([]string{"init", "--role", "server", "--site", "hq"}, listen(c.server.ip)...)...); err != nil {
		return c, err
	}
	if err := c.start(ctx, c.server); err != nil {
		return c, err
	}
	for i, nss := range t.nodes {
		site := fmt.Sprintf("s%d", i+1)
		relay := &node{name: "relay-" + site, ns: nss[0], home: filepath.Join(dir, "relay-"+site), ip: t.nodeIP(i+1, 0),
			role: "relay", site: site, siteIdx: i + 1}
		var tok api.Token
		if err := c.swdist(ctx, c.server, &tok, "token", "create", "--role", "relay", "--site", site); err != nil {
			return c, err
		}
		if err := c.swdist(ctx, relay, nil, append([]string{"join", tok.Token}, listen(relay.ip)...)...); err != nil {
			return c, err
		}
		if freezable && i == len(t.nodes)-1 {
			d, err := mountFreezable(ctx, filepath.Join(relay.home, "blocks"), l)
			if err != nil {
				return c, err
			}
			c.disk = d
		}
		if err := c.start(ctx, relay); err != nil {
			return c, err
		}
		c.relays = append(c.relays, relay)
		var clients []*node
		for j := 1; j < len(nss); j++ {
			name := fmt.Sprintf("%s-c%d", site, j)
			cl := &node{name: name, ns: nss[j], home: filepath.Join(dir, name), ip: t.nodeIP(i+1, j), role: "client", site: site, siteIdx: i + 1}
			if err := c.swdist(ctx, relay, &tok, "token", "create", "--role", "client"); err != nil {
				return c, err
			}
			if err := c.swdist(ctx, cl, nil, append([]string{"join", tok.Token}, listen(cl.ip)...)...); err != nil {
				return c, err
			}
			if err := c.start(ctx, cl); err != nil {
				return c, err
			}
			clients = append(clients, cl)
		}
		c.clients = append(c.clients, clients)
	}
	for _, n := range c.all() {
		c.byPeer[n.peerID] = n
	}
	return c, c.waitOnline(ctx)
}

// waitOnline waits until the server's tree shows every node online.
func (c *cluster) waitOnline(ctx context.Context) error {
	want := len(c.all())
	var online func(n tree.Node) int
	online = func(n tree.Node) int {
		k := 0
		if n.Online {
			k = 1
		}
		for _, ch := range n.Children {
			k += online(ch)
		}
		return k
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		tr, err := c.server.api.Tree(ctx, -1)
		got := 0
		if err == nil {
			got = online(tr)
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d nodes online at the server after 60 s (last error: %v)", got, want, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
