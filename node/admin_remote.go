package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/internal/wire"
	"github.com/swdist/swdist/node/api"
)

// adminProtocol lets an ancestor ask a relay to certify an administrator
// for the relay's subtree: how 'swdist admin add --scope RELAY' on the root
// grants a narrower scope than its own. The scope is always the issuing
// node, so every node can place it in the tree from the issuer's chain.
const adminProtocol protocol.ID = "/swdist/admin/1.0.0"

type adminReq struct {
	Name     string `cbor:"0,keyasint"`
	PubKey   string `cbor:"1,keyasint"`
	Lifetime string `cbor:"2,keyasint,omitempty"`
}

type adminResp struct {
	Cert     string `cbor:"0,keyasint"`
	NotAfter int64  `cbor:"1,keyasint"`
}

// serveAdminRequests answers ancestors' certification requests.
func (n *Node) serveAdminRequests() {
	n.host.SetStreamHandler(adminProtocol, n.member.Guard(func(pr member.Peer, s network.Stream) {
		_ = wire.Serve(s, 16<<10, func(req adminReq) (adminResp, error) {
			own := n.selfCerts()
			if !slices.ContainsFunc(own[1:], func(c cert.Cert) bool { return c.PeerID == pr.ID }) {
				n.log.Warn("admin certification asked by a node that is not an ancestor", "peer", pr.ID)
				return adminResp{}, fmt.Errorf("%s is not an ancestor of this node", pr.ID)
			}
			res, err := n.certifyHere(api.AdminRequest{Name: req.Name, PubKey: req.PubKey, Lifetime: req.Lifetime})
			if err != nil {
				return adminResp{}, err
			}
			n.log.Info("administrator certified at an ancestor's request", "name", req.Name, "ancestor", pr.ID)
			return adminResp{Cert: res.Cert, NotAfter: res.NotAfter.Unix()}, nil
		})
	}))
}

// certifyBelow asks the relay scope, below this node, to certify an admin.
func (n *Node) certifyBelow(ctx context.Context, scope peer.ID, req api.AdminRequest) (api.AdminCert, error) {
	node, ok := n.find(ctx, scope)
	if !ok {
		return api.AdminCert{}, api.BadRequest("--scope %s is not in this node's subtree: see 'swdist tree'", scope)
	}
	if node.Role != string(cert.RoleRelay) || !node.Online {
		return api.AdminCert{}, api.BadRequest("--scope %s must be a relay that is online now (it is a %s, online: %v)", scope, node.Role, node.Online)
	}
	var addrs []ma.Multiaddr
	for _, a := range node.Addrs {
		if addr, err := ma.NewMultiaddr(a); err == nil {
			addrs = append(addrs, addr)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.host.Connect(ctx, peer.AddrInfo{ID: scope, Addrs: addrs}); err != nil {
		return api.AdminCert{}, fmt.Errorf("reach --scope %s: %w", scope, err)
	}
	if _, err := n.member.Wait(ctx, scope); err != nil {
		return api.AdminCert{}, fmt.Errorf("reach --scope %s: %w", scope, err)
	}
	s, err := n.host.NewStream(ctx, scope, adminProtocol)
	if err != nil {
		return api.AdminCert{}, fmt.Errorf("ask %s to certify: %w", scope, err)
	}
	resp, err := wire.Call[adminReq, adminResp](s, adminReq{Name: req.Name, PubKey: req.PubKey, Lifetime: req.Lifetime}, 128<<10)
	if err != nil {
		return api.AdminCert{}, api.BadRequest("%s refused to certify: %v", scope, err)
	}
	// Check what came back before handing it on.
	a, err := ReadAdminCertText([]byte(resp.Cert))
	if err != nil {
		return api.AdminCert{}, err
	}
	if err := n.checkAdminCert(a, scope); err != nil {
		return api.AdminCert{}, err
	}
	return api.AdminCert{Name: req.Name, Scope: scope.String(), Issuer: scope.String(), NotAfter: time.Unix(resp.NotAfter, 0).UTC(), Cert: resp.Cert}, nil
}

var errNotAdmin = errors.New("not an admin certificate for that scope")
