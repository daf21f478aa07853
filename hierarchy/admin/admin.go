// Package admin certifies administrators: the Ed25519 keys that sign jobs.
// A managing node (the root, or a relay for its own subtree) binds an
// administrator's public key to a name and a scope, the subtree the
// administrator may target, and signs that binding with its libp2p key.
// The certificate carries the managing node's membership chain, so any node
// can check it against the organisation root.
//
// The scope is the issuer's own subtree: the root grants the whole tree, a
// relay its subtree. The issuer's chain is checked as of the admin
// certificate's issue, so an
// admin certificate outlives its issuer's routine renewals; revocation of
// the issuer (or of anything above it) is checked now, so revoking a relay
// withdraws the administrators it certified.
package admin

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
)

// MaxNameLen bounds an administrator's name.
const MaxNameLen = 64

// DefaultLifetime is the validity of an admin certificate when none is asked.
const DefaultLifetime = 365 * 24 * time.Hour

// ErrScope marks an admin certificate whose scope its issuer cannot grant.
var ErrScope = errors.New("scope not allowed")

// Cert binds an administrator's key to a name and a scope.
type Cert struct {
	Name   string
	Key    crypto.PubKey // Ed25519
	Scope  peer.ID       // the root of the subtree the administrator may target
	Issuer peer.ID       // the managing node that certified it
	Org    cert.Fingerprint
	// NotBefore is also when the certificate was issued (less the clock
	// skew allowance): the issuer's chain must have been valid then.
	NotBefore time.Time
	NotAfter  time.Time
}

type body struct {
	V         uint8  `cbor:"0,keyasint"`
	Name      string `cbor:"1,keyasint"`
	Key       []byte `cbor:"2,keyasint"`
	Scope     []byte `cbor:"3,keyasint"`
	Issuer    []byte `cbor:"4,keyasint"`
	Org       []byte `cbor:"5,keyasint"`
	NotBefore int64  `cbor:"6,keyasint"`
	NotAfter  int64  `cbor:"7,keyasint"`
}

// Signed is an admin certificate as it travels: the body, the issuer's
// signature over it, and the issuer's membership chain.
type Signed struct {
	Body        []byte     `cbor:"0,keyasint"`
	Sig         []byte     `cbor:"1,keyasint"`
	IssuerChain cert.Chain `cbor:"2,keyasint"`
}

const domain = "swdist/admin/v1\x00"

// Certify signs c with the issuing node's key. issuerChain is that node's
// membership chain; a relay may only grant its own subtree as scope.
func Certify(c Cert, issuerKey crypto.PrivKey, issuerChain cert.Chain) (Signed, error) {
	leaf, err := issuerChain.Leaf()
	if err != nil {
		return Signed{}, fmt.Errorf("issuer's certificate: %w", err)
	}
	if err := checkScope(c, leaf); err != nil {
		return Signed{}, err
	}
	if c.Name == "" || len(c.Name) > MaxNameLen {
		return Signed{}, fmt.Errorf("admin name must be 1 to %d bytes", MaxNameLen)
	}
	raw, err := c.Key.Raw()
	if err != nil || c.Key.Type() != crypto.Ed25519 || len(raw) != ed25519.PublicKeySize {
		return Signed{}, errors.New("admin key must be an Ed25519 public key")
	}
	if !c.NotAfter.After(c.NotBefore) {
		return Signed{}, errors.New("not-after is not after not-before")
	}
	data, err := cert.Marshal(body{V: 1, Name: c.Name, Key: raw, Scope: []byte(c.Scope), Issuer: []byte(c.Issuer),
		Org: c.Org[:], NotBefore: c.NotBefore.Unix(), NotAfter: c.NotAfter.Unix()})
	if err != nil {
		return Signed{}, err
	}
	sig, err := issuerKey.Sign(append([]byte(domain), data...))
	if err != nil {
		return Signed{}, fmt.Errorf("sign admin certificate: %w", err)
	}
	return Signed{Body: data, Sig: sig, IssuerChain: issuerChain}, nil
}

// checkScope: a managing node grants its own subtree: the root the whole
// tree, a relay its subtree. The scope is always the issuer, so any node
// can place it in the tree from the issuer's chain that the certificate
// carries. (An admin for a relay's subtree is certified on that relay.)
func checkScope(c Cert, issuer cert.Cert) error {
	if !issuer.Role.CanIssue() {
		return fmt.Errorf("%w: %s is a %s and cannot certify administrators", ErrScope, issuer.PeerID, issuer.Role)
	}
	if c.Issuer != issuer.PeerID {
		return fmt.Errorf("%w: certificate names issuer %s, signed by %s", ErrScope, c.Issuer, issuer.PeerID)
	}
	if c.Scope != issuer.PeerID {
		return fmt.Errorf("%w: %s can grant only its own subtree, not %s; certify the admin on that node", ErrScope, issuer.PeerID, c.Scope)
	}
	return nil
}

// Decode parses an admin certificate's body without checking it.
func Decode(data []byte) (Cert, error) {
	if len(data) > cert.MaxBodyBytes {
		return Cert{}, fmt.Errorf("%w: admin certificate of %d bytes", cert.ErrMalformed, len(data))
	}
	var b body
	if err := cert.Unmarshal(data, &b); err != nil {
		return Cert{}, fmt.Errorf("%w: admin certificate: %v", cert.ErrMalformed, err)
	}
	if again, err := cert.Marshal(b); err != nil || string(again) != string(data) {
		return Cert{}, fmt.Errorf("%w: admin certificate not canonically encoded", cert.ErrMalformed)
	}
	if b.V != 1 || len(b.Org) != len(cert.Fingerprint{}) || b.Name == "" || len(b.Name) > MaxNameLen {
		return Cert{}, fmt.Errorf("%w: admin certificate fields", cert.ErrMalformed)
	}
	key, err := crypto.UnmarshalEd25519PublicKey(b.Key)
	if err != nil {
		return Cert{}, fmt.Errorf("%w: admin key: %v", cert.ErrMalformed, err)
	}
	c := Cert{Name: b.Name, Key: key, Scope: peer.ID(b.Scope), Issuer: peer.ID(b.Issuer),
		NotBefore: time.Unix(b.NotBefore, 0).UTC(), NotAfter: time.Unix(b.NotAfter, 0).UTC()}
	copy(c.Org[:], b.Org)
	if c.Scope.Validate() != nil || c.Issuer.Validate() != nil {
		return Cert{}, fmt.Errorf("%w: admin certificate peer ids", cert.ErrMalformed)
	}
	return c, nil
}

// Verify checks s at time now against the organisation of v: the issuer's
// chain (as of issue, with revocations as of now), its signature, the scope
// the issuer may grant and the certificate's validity. It returns the admin
// certificate and the issuer's certificates, leaf first.
func Verify(v *cert.Verifier, s Signed, now time.Time) (Cert, []cert.Cert, error) {
	c, err := Decode(s.Body)
	if err != nil {
		return Cert{}, nil, err
	}
	if c.Org != v.Org {
		return Cert{}, nil, fmt.Errorf("admin %q: %w", c.Name, cert.ErrWrongOrg)
	}
	if now.Before(c.NotBefore.Add(-cert.ClockSkew)) || now.After(c.NotAfter.Add(cert.ClockSkew)) {
		return Cert{}, nil, fmt.Errorf("admin %q (valid %s to %s): %w", c.Name,
			c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), cert.ErrExpired)
	}
	asOfIssue := *v
	issued := c.NotBefore.Add(cert.ClockSkew)
	asOfIssue.Now = func() time.Time { return issued }
	issuer, err := asOfIssue.Verify(s.IssuerChain)
	if err != nil {
		return Cert{}, nil, fmt.Errorf("admin %q: issuer's chain: %w", c.Name, err)
	}
	if err := checkScope(c, issuer[0]); err != nil {
		return Cert{}, nil, fmt.Errorf("admin %q: %w", c.Name, err)
	}
	pub, err := issuer[0].PeerID.ExtractPublicKey()
	if err != nil {
		return Cert{}, nil, fmt.Errorf("admin %q: issuer key: %w", c.Name, err)
	}
	if ok, err := pub.Verify(append([]byte(domain), s.Body...), s.Sig); err != nil || !ok {
		return Cert{}, nil, fmt.Errorf("admin %q: %w", c.Name, cert.ErrBadSignature)
	}
	return c, issuer, nil
}

// Covers reports whether an administrator of the given scope may target the
// node whose verified chain is chain (leaf first): the scope is the node
// itself or one of its ancestors.
func Covers(scope peer.ID, chain []cert.Cert) bool {
	return slices.ContainsFunc(chain, func(c cert.Cert) bool { return c.PeerID == scope })
}
