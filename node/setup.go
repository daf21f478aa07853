package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/enroll"
	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/home"
)

// InitOptions describe a new organisation's root node.
type InitOptions struct {
	Role   cert.Role // server, or relay for a department server
	Site   string
	Groups []string
	Listen []string // empty: the default
	// CertLifetime overrides the default lifetime of certificates.
	CertLifetime time.Duration
}

// Init creates a new organisation in h: the node key, the organisation root
// key, the root node's certificate and its config.
func Init(h home.Home, opt InitOptions) (cert.Cert, error) {
	if h.Initialised() {
		return cert.Cert{}, fmt.Errorf("%s already holds a node: use another --home, or remove it to start over", h.Dir)
	}
	if !opt.Role.CanIssue() {
		return cert.Cert{}, fmt.Errorf("init creates a root: role server, or relay for a department server; a client joins with 'swdist join TOKEN'")
	}
	cfg := config.Config{Role: string(opt.Role), Site: opt.Site, Groups: opt.Groups, Listen: opt.Listen}
	cfg.Enroll.CertLifetime.Duration = opt.CertLifetime
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return cert.Cert{}, err
	}
	listen, err := pinPorts(cfg.Listen)
	if err != nil {
		return cert.Cert{}, err
	}
	cfg.Listen = listen
	nodeKey, err := home.NewKey()
	if err != nil {
		return cert.Cert{}, err
	}
	rootKey, err := home.NewKey()
	if err != nil {
		return cert.Cert{}, err
	}
	fp, err := cert.FingerprintOf(rootKey.GetPublic())
	if err != nil {
		return cert.Cert{}, err
	}
	id, err := peer.IDFromPrivateKey(nodeKey)
	if err != nil {
		return cert.Cert{}, err
	}
	now := time.Now()
	c := cert.Cert{PeerID: id, Role: opt.Role, Site: opt.Site, Groups: opt.Groups, Org: fp,
		NotBefore: now.Add(-cert.ClockSkew).Truncate(time.Second),
		NotAfter:  now.Add(cfg.Enroll.CertLifetime.Duration).Truncate(time.Second), Serial: rand.Uint64()}
	signed, err := cert.Issue(c, rootKey)
	if err != nil {
		return cert.Cert{}, err
	}
	return c, writeHome(h, cfg, nodeKey, rootKey, rootKey.GetPublic(), cert.Chain{signed})
}

// JoinOptions describe a node joining an organisation.
type JoinOptions struct {
	Token  string
	Listen []string // empty: the default
}

// Join enrolls a new node in h under the token's parent. Nothing is written
// unless the parent issued a certificate that verifies.
func Join(ctx context.Context, h home.Home, opt JoinOptions) (cert.Cert, error) {
	if h.Initialised() {
		return cert.Cert{}, fmt.Errorf("%s already holds a node: use another --home", h.Dir)
	}
	tok, err := cert.ParseToken(opt.Token)
	if err != nil {
		return cert.Cert{}, err
	}
	cfg := config.Config{Role: string(tok.Role), Site: tok.Site, Groups: tok.Groups, Listen: opt.Listen}
	cfg.Parent.ID = tok.Parent.String()
	for _, a := range tok.Addrs {
		cfg.Parent.Addrs = append(cfg.Parent.Addrs, a.String())
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return cert.Cert{}, err
	}
	if cfg.Listen, err = pinPorts(cfg.Listen); err != nil {
		return cert.Cert{}, err
	}
	key, err := home.NewKey()
	if err != nil {
		return cert.Cert{}, err
	}
	hst, err := newHost(key, nil, config.Limits{MaxConns: 16, ConnLow: 8, ConnHigh: 12}, nil, nil)
	if err != nil {
		return cert.Cert{}, err
	}
	defer hst.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	j, err := enroll.Join(ctx, hst, opt.Token)
	if err != nil {
		return cert.Cert{}, err
	}
	return j.Cert, writeHome(h, cfg, key, nil, j.Root, j.Chain)
}

func writeHome(h home.Home, cfg config.Config, nodeKey, rootKey crypto.PrivKey, root crypto.PubKey, ch cert.Chain) error {
	if err := h.Create(); err != nil {
		return err
	}
	steps := []func() error{
		func() error { return home.WriteKey(h.NodeKey(), nodeKey) },
		func() error {
			if rootKey == nil {
				return nil
			}
			return home.WriteKey(h.RootKey(), rootKey)
		},
		func() error { return home.WritePub(h.OrgPub(), root) },
		func() error { return home.WriteChain(h.Cert(), ch) },
		func() error { return config.Save(h.Config(), cfg) }, // last: its presence marks the home as a node
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// pinPorts replaces port 0 in listen addresses with a free port, so that
// the node keeps its address across restarts and its children find it.
// A TCP and a QUIC address that both ask for port 0 get the same port.
func pinPorts(listen []string) ([]string, error) {
	var picked string
	out := make([]string, 0, len(listen))
	for _, s := range listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", s, err)
		}
		for _, code := range []int{ma.P_TCP, ma.P_UDP} {
			port, err := a.ValueForProtocol(code)
			if err != nil || port != "0" {
				continue
			}
			if picked == "" {
				if picked, err = freePort(a); err != nil {
					return nil, err
				}
			}
			name := "tcp"
			if code == ma.P_UDP {
				name = "udp"
			}
			repl, _ := ma.NewComponent(name, picked)
			var rebuilt ma.Multiaddr
			for _, c := range a {
				if c.Protocol().Code == code {
					rebuilt = append(rebuilt, *repl)
				} else {
					rebuilt = append(rebuilt, c)
				}
			}
			a = rebuilt
		}
		out = append(out, a.String())
	}
	return out, nil
}

// freePort finds a port free for both TCP and UDP on a's IP.
func freePort(a ma.Multiaddr) (string, error) {
	ip, err := manet.ToIP(a)
	if err != nil {
		return "", fmt.Errorf("listen address %s: %w", a, err)
	}
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			return "", fmt.Errorf("find a free port on %s: %w", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err == nil {
			u.Close()
			return strconv.Itoa(port), nil
		}
	}
	return "", fmt.Errorf("find a free port on %s: none free for both TCP and UDP", ip)
}
