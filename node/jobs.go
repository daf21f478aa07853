package node

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/node/api"
)

// CertifyAdmin implements api.Backend: this managing node certifies an
// administrator's key for its own subtree, or, with a scope below it, asks
// that relay to certify it for its subtree.
func (n *Node) CertifyAdmin(ctx context.Context, req api.AdminRequest) (api.AdminCert, error) {
	if n.issuer == nil {
		return api.AdminCert{}, api.BadRequest("this node is a client: certify administrators on a server or relay")
	}
	if req.Scope != "" && req.Scope != n.host.ID().String() {
		scope, err := peer.Decode(req.Scope)
		if err != nil {
			return api.AdminCert{}, api.BadRequest("--scope %q is not a peer ID: %v", req.Scope, err)
		}
		if _, err := parseAdminPub(req.PubKey); err != nil {
			return api.AdminCert{}, err
		}
		return n.certifyBelow(ctx, scope, req)
	}
	return n.certifyHere(req)
}

func parseAdminPub(text string) (crypto.PubKey, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, api.BadRequest("--pubkey: not a PEM public key; make one with 'swdist admin keygen'")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	ek, ok := k.(ed25519.PublicKey)
	if err != nil || !ok {
		return nil, api.BadRequest("--pubkey: want an Ed25519 public key made by 'swdist admin keygen'")
	}
	pub, err := crypto.UnmarshalEd25519PublicKey(ek)
	if err != nil {
		return nil, api.BadRequest("--pubkey: %v", err)
	}
	return pub, nil
}

// certifyHere certifies an administrator for this node's own subtree.
func (n *Node) certifyHere(req api.AdminRequest) (api.AdminCert, error) {
	if n.issuer == nil {
		return api.AdminCert{}, api.BadRequest("this node is a client and cannot certify administrators")
	}
	pub, err := parseAdminPub(req.PubKey)
	if err != nil {
		return api.AdminCert{}, err
	}
	lifetime := admin.DefaultLifetime
	if req.Lifetime != "" {
		if lifetime, err = time.ParseDuration(req.Lifetime); err != nil || lifetime <= 0 {
			return api.AdminCert{}, api.BadRequest("--lifetime %q: use a positive duration like 8760h", req.Lifetime)
		}
	}
	now := time.Now()
	c := admin.Cert{Name: req.Name, Key: pub, Scope: n.host.ID(), Issuer: n.host.ID(), Org: n.Cert().Org,
		NotBefore: now.Add(-time.Minute).Truncate(time.Second), NotAfter: now.Add(lifetime).Truncate(time.Second)}
	s, err := admin.Certify(c, n.key, n.Chain())
	if err != nil {
		return api.AdminCert{}, api.BadRequest("%v", err)
	}
	text, err := EncodeAdminCert(s)
	if err != nil {
		return api.AdminCert{}, err
	}
	n.log.Info("administrator certified", "name", c.Name, "scope", c.Scope, "until", c.NotAfter)
	return api.AdminCert{Name: c.Name, Scope: c.Scope.String(), Issuer: c.Issuer.String(), NotAfter: c.NotAfter, Cert: string(text)}, nil
}

// checkAdminCert verifies an admin certificate and that its scope is scope.
func (n *Node) checkAdminCert(s admin.Signed, scope peer.ID) error {
	a, _, err := admin.Verify(n.verifier, s, time.Now())
	if err != nil {
		return fmt.Errorf("certificate from %s: %w", scope, err)
	}
	if a.Scope != scope {
		return fmt.Errorf("certificate from %s: %w", scope, errNotAdmin)
	}
	return nil
}

// SubmitJob implements api.Backend: a manifest signed by an administrator
// is checked as every node checks it, stored, and sent into this subtree.
func (n *Node) SubmitJob(ctx context.Context, req api.JobSubmit) (api.JobCreated, error) {
	if n.issuer == nil {
		return api.JobCreated{}, api.BadRequest("this node is a client: submit jobs on a server or relay")
	}
	v, err := n.gossip.Submit(ctx, req.Manifest)
	if err != nil {
		return api.JobCreated{}, api.BadRequest("job refused: %v", err)
	}
	return api.JobCreated{ID: v.JobID, Seq: v.Seq, Targets: strings.Fields(v.Target.String())}, nil
}

// ListJobs implements api.Backend: the manifests this node holds.
func (n *Node) ListJobs(ctx context.Context) ([]api.Job, error) {
	jobs, err := n.store.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Job, 0, len(jobs))
	for _, j := range jobs {
		state := "held"
		if j.Expired {
			state = "expired"
		}
		out = append(out, api.Job{ID: j.ID, Type: j.Type, Admin: j.Admin, Target: j.Target, ForThisNode: j.ForMe,
			State: state, CreatedAt: j.CreatedAt, ExpiresAt: j.ExpiresAt})
	}
	return out, nil
}

// heldManifest is job id's manifest as held here, with its signer's
// certificate, read back without checking the signature again (it was
// checked when it arrived). A job not held here is a bad request.
func (n *Node) heldManifest(ctx context.Context, id string) (gossip.Manifest, admin.Cert, error) {
	raw, err := n.store.ManifestRaw(ctx, id)
	if err != nil {
		return gossip.Manifest{}, admin.Cert{}, api.BadRequest("%v", err)
	}
	return gossip.Describe(raw)
}

// ShowJob implements api.Backend.
func (n *Node) ShowJob(ctx context.Context, id string) (api.JobDetail, error) {
	m, a, err := n.heldManifest(ctx, id)
	if err != nil {
		return api.JobDetail{}, err
	}
	d := api.JobDetail{ID: m.JobID, Seq: m.Seq, Type: m.Type, Params: m.Params, Targets: strings.Fields(m.Target.String()),
		CreatedAt: m.CreatedAt, NotBefore: m.NotBefore, ExpiresAt: m.ExpiresAt,
		Admin: a.Name, AdminScope: a.Scope.String(), AdminIssuer: a.Issuer.String()}
	if m.Package != nil {
		d.PackageCID, d.PackageSize = m.Package.CID, m.Package.Size
	}
	return d, nil
}

// GossipRejected counts the manifests this node refused, by reason.
func (n *Node) GossipRejected() map[string]int { return n.gossip.Rejected() }

// GossipTraffic counts manifest copies received and sent by this node.
func (n *Node) GossipTraffic() gossip.Traffic { return n.gossip.Traffic() }
