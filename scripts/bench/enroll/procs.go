package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
)

// procs is a server and a relay run as 'swdist run' processes.
type procs struct {
	bin, server, relay string
	daemons            []*exec.Cmd
	relayPID           int
}

func (p *procs) cli(ctx context.Context, home string, v any, args ...string) error {
	cmd := exec.CommandContext(ctx, p.bin, append(args, "--home", home)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("swdist %v: %v: %s", args, err, errOut.String())
	}
	if v != nil {
		return json.Unmarshal(out.Bytes(), v)
	}
	return nil
}

func (p *procs) daemon(ctx context.Context, home string) (*exec.Cmd, error) {
	cmd := exec.Command(p.bin, "run", "--home", home)
	logf, err := os.Create(home + ".log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.daemons = append(p.daemons, cmd)
	deadline := time.Now().Add(20 * time.Second)
	for p.cli(ctx, home, nil, "id", "--json") != nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("daemon for %s did not start; see %s.log", home, home)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cmd, nil
}

func startProcesses(ctx context.Context, bin, dir string, listen []string) (*procs, error) {
	p := &procs{bin: bin, server: filepath.Join(dir, "server"), relay: filepath.Join(dir, "relay")}
	var l []string
	for _, a := range listen {
		l = append(l, "--listen", a)
	}
	if err := p.cli(ctx, p.server, nil, append([]string{"init", "--role", "server", "--site", "hq"}, l...)...); err != nil {
		return nil, err
	}
	if _, err := p.daemon(ctx, p.server); err != nil {
		p.stop()
		return nil, err
	}
	var tok api.Token
	if err := p.cli(ctx, p.server, &tok, "token", "create", "--role", "relay", "--site", "a", "--json"); err != nil {
		p.stop()
		return nil, err
	}
	if err := p.cli(ctx, p.relay, nil, append([]string{"join", tok.Token}, l...)...); err != nil {
		p.stop()
		return nil, err
	}
	cmd, err := p.daemon(ctx, p.relay)
	if err != nil {
		p.stop()
		return nil, err
	}
	p.relayPID = cmd.Process.Pid
	return p, nil
}

func (p *procs) token(ctx context.Context) (string, error) {
	var tok api.Token
	err := p.cli(ctx, p.relay, &tok, "token", "create", "--role", "client", "--json")
	return tok.Token, err
}

func (p *procs) tree(ctx context.Context) (tree.Node, error) {
	var t tree.Node
	err := p.cli(ctx, p.relay, &t, "tree", "--depth", "1", "--json")
	return t, err
}

// conns asks the relay for its verified peers ('swdist peers'): one
// address per connection; the transport split is not known from outside.
func (p *procs) conns(ctx context.Context, children map[peer.ID]bool) connStats {
	s := connStats{conns: -1, peers: -1, tcp: -1, quic: -1, verified: -1}
	var peers []api.Peer
	if err := p.cli(ctx, p.relay, &peers, "peers", "--json"); err != nil {
		return s
	}
	s.conns, s.peers, s.verified = 0, len(peers), len(peers)
	for _, pr := range peers {
		s.conns += len(pr.Addrs)
		if id, err := peer.Decode(pr.PeerID); err == nil && children[id] {
			s.childrenConned++
		}
	}
	return s
}

func (p *procs) memory() string { return "RSS " + rss(strconv.Itoa(p.relayPID)) + " (relay process)" }

// stop ends the daemons by their process ids.
func (p *procs) stop() {
	for _, cmd := range p.daemons {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	}
	p.daemons = nil
}
