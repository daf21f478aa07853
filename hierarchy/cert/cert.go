// Package cert defines swdist's membership certificates: the signed record
// that binds a libp2p peer ID to its role, parent, site and groups, and the
// chain of such records that links every node to its organisation's root key.
//
// Trust model: the organisation root key signs only the certificate of the
// root node (a server, or a relay acting as department server). Every other
// certificate is signed by its parent's libp2p key, so a relay holds a
// delegated issuing key for its own children and can enroll them while its
// uplink is down. A chain is ordered leaf first; certificate i's parent is
// certificate i+1's peer, and the last certificate is signed by the root key.
package cert

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Role is what a node does in the tree.
type Role string

// The roles. A department server is a RoleRelay with no parent.
const (
	RoleServer Role = "server"
	RoleRelay  Role = "relay"
	RoleClient Role = "client"
)

// ParseRole accepts the roles' names as typed on the command line.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleServer, RoleRelay, RoleClient:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: use server, relay or client", s)
}

// CanIssue reports whether nodes of this role may enroll children.
func (r Role) CanIssue() bool { return r == RoleServer || r == RoleRelay }

// Limits on what a certificate may hold. They bound the memory a malicious
// peer can make a node spend and are far above any real deployment.
const (
	MaxChainLen  = 16      // depth of the tree, root included
	MaxBodyBytes = 4 << 10 // one encoded certificate body
	MaxGroups    = 32      // groups per node
	MaxNameLen   = 128     // site and group names, in bytes
	ClockSkew    = time.Minute
)

// Sentinel errors a caller can test with errors.Is.
var (
	ErrMalformed    = errors.New("malformed certificate")
	ErrBadSignature = errors.New("bad signature")
	ErrExpired      = errors.New("certificate expired or not yet valid")
	ErrWrongOrg     = errors.New("certificate from another organisation")
	ErrBadChain     = errors.New("certificate chain does not link up")
	ErrRevoked      = errors.New("certificate revoked")
)

// Cert is a decoded membership certificate.
type Cert struct {
	PeerID    peer.ID
	Role      Role
	Parent    peer.ID // empty for the root node
	Site      string
	Groups    []string
	Org       Fingerprint
	NotBefore time.Time
	NotAfter  time.Time
	Serial    uint64
}

// IsRoot reports whether c is the certificate of the tree's root node.
func (c Cert) IsRoot() bool { return c.Parent == "" }

// body is the canonical wire form of a Cert.
type body struct {
	V         uint8    `cbor:"0,keyasint"`
	PeerID    []byte   `cbor:"1,keyasint"`
	Role      string   `cbor:"2,keyasint"`
	Parent    []byte   `cbor:"3,keyasint,omitempty"`
	Site      string   `cbor:"4,keyasint"`
	Groups    []string `cbor:"5,keyasint,omitempty"`
	Org       []byte   `cbor:"6,keyasint"`
	NotBefore int64    `cbor:"7,keyasint"`
	NotAfter  int64    `cbor:"8,keyasint"`
	Serial    uint64   `cbor:"9,keyasint"`
}

// Signed is an encoded record and the signature over it.
type Signed struct {
	Body []byte `cbor:"0,keyasint"`
	Sig  []byte `cbor:"1,keyasint"`
}

// Chain is a leaf-first list of signed certificates ending at the root node.
type Chain []Signed

// Fingerprint names an organisation: the SHA-256 of its root public key.
type Fingerprint [32]byte

// String is the short form shown to operators.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:8]) }

// FingerprintOf computes the fingerprint of a root public key.
func FingerprintOf(pub crypto.PubKey) (Fingerprint, error) {
	raw, err := pub.Raw()
	if err != nil {
		return Fingerprint{}, fmt.Errorf("read root public key: %w", err)
	}
	return sha256.Sum256(raw), nil
}

// Domain-separation prefixes: a signature over one kind of record can never
// be replayed as another.
const (
	domainCert       = "swdist/cert/v1\x00"
	domainToken      = "swdist/token/v1\x00"
	domainRevocation = "swdist/revocation/v1\x00"
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  1024,
		MaxMapPairs:       64,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v canonically (RFC 8949 core deterministic encoding).
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes data into v with swdist's limits: no duplicate keys,
// no indefinite lengths, no unknown fields, bounded nesting and sizes.
func Unmarshal(data []byte, v any) error { return decMode.Unmarshal(data, v) }

// unmarshalCanonical decodes data and insists it was canonically encoded,
// so that one record has exactly one byte form.
func unmarshalCanonical(data []byte, v any) error {
	if err := Unmarshal(data, v); err != nil {
		return err
	}
	again, err := Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, data) {
		return errors.New("not canonically encoded")
	}
	return nil
}

func checkName(what, s string, required bool) error {
	if required && s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s is longer than %d bytes", what, MaxNameLen)
	}
	return nil
}

// Validate checks the fields of c without any signature.
func (c Cert) Validate() error {
	if _, err := ParseRole(string(c.Role)); err != nil {
		return err
	}
	if err := c.PeerID.Validate(); err != nil {
		return fmt.Errorf("peer id: %w", err)
	}
	if c.Parent != "" {
		if err := c.Parent.Validate(); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		if c.Parent == c.PeerID {
			return errors.New("a node cannot be its own parent")
		}
	}
	if err := checkName("site", c.Site, true); err != nil {
		return err
	}
	if len(c.Groups) > MaxGroups {
		return fmt.Errorf("%d groups, at most %d", len(c.Groups), MaxGroups)
	}
	for _, g := range c.Groups {
		if err := checkName("group", g, true); err != nil {
			return err
		}
	}
	if !c.NotAfter.After(c.NotBefore) {
		return errors.New("not-after is not after not-before")
	}
	return nil
}

func (c Cert) encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	groups := slices.Clone(c.Groups)
	slices.Sort(groups)
	return Marshal(body{
		V: 1, PeerID: []byte(c.PeerID), Role: string(c.Role), Parent: []byte(c.Parent),
		Site: c.Site, Groups: slices.Compact(groups), Org: c.Org[:],
		NotBefore: c.NotBefore.Unix(), NotAfter: c.NotAfter.Unix(), Serial: c.Serial,
	})
}

// Decode parses a certificate body without checking any signature.
func Decode(data []byte) (Cert, error) {
	if len(data) > MaxBodyBytes {
		return Cert{}, fmt.Errorf("%w: body of %d bytes, at most %d", ErrMalformed, len(data), MaxBodyBytes)
	}
	var b body
	if err := unmarshalCanonical(data, &b); err != nil {
		return Cert{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if b.V != 1 {
		return Cert{}, fmt.Errorf("%w: version %d", ErrMalformed, b.V)
	}
	if len(b.Org) != len(Fingerprint{}) {
		return Cert{}, fmt.Errorf("%w: organisation fingerprint of %d bytes", ErrMalformed, len(b.Org))
	}
	// encode sorts and deduplicates groups: any other order is a second
	// byte form of the same certificate.
	for i := 1; i < len(b.Groups); i++ {
		if b.Groups[i-1] >= b.Groups[i] {
			return Cert{}, fmt.Errorf("%w: groups not sorted and unique", ErrMalformed)
		}
	}
	c := Cert{
		PeerID: peer.ID(b.PeerID), Role: Role(b.Role), Parent: peer.ID(b.Parent),
		Site: b.Site, Groups: b.Groups,
		NotBefore: time.Unix(b.NotBefore, 0).UTC(), NotAfter: time.Unix(b.NotAfter, 0).UTC(),
		Serial: b.Serial,
	}
	copy(c.Org[:], b.Org)
	if err := c.Validate(); err != nil {
		return Cert{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return c, nil
}

func sign(key crypto.PrivKey, domain string, data []byte) ([]byte, error) {
	return key.Sign(append([]byte(domain), data...))
}

func verifySig(pub crypto.PubKey, domain string, data, sig []byte) error {
	ok, err := pub.Verify(append([]byte(domain), data...), sig)
	if err != nil || !ok {
		return ErrBadSignature
	}
	return nil
}

// Issue signs c with the issuer's key: the organisation root key for the
// root node's certificate, the parent's libp2p key for everyone else.
func Issue(c Cert, issuer crypto.PrivKey) (Signed, error) {
	data, err := c.encode()
	if err != nil {
		return Signed{}, fmt.Errorf("encode certificate: %w", err)
	}
	sig, err := sign(issuer, domainCert, data)
	if err != nil {
		return Signed{}, fmt.Errorf("sign certificate: %w", err)
	}
	return Signed{Body: data, Sig: sig}, nil
}

// Leaf decodes the first certificate of the chain without verifying it.
func (ch Chain) Leaf() (Cert, error) {
	if len(ch) == 0 {
		return Cert{}, fmt.Errorf("%w: empty chain", ErrMalformed)
	}
	return Decode(ch[0].Body)
}

// NotAfter is the earliest expiry in the chain: when the chain stops
// verifying unless renewed.
func (ch Chain) NotAfter() (time.Time, error) {
	var min time.Time
	for i, s := range ch {
		c, err := Decode(s.Body)
		if err != nil {
			return time.Time{}, fmt.Errorf("certificate %d: %w", i, err)
		}
		if min.IsZero() || c.NotAfter.Before(min) {
			min = c.NotAfter
		}
	}
	return min, nil
}

// EncodeChain and DecodeChain give a chain's byte form.
func EncodeChain(ch Chain) ([]byte, error) { return Marshal(ch) }

// DecodeChain parses a chain's byte form, bounded by MaxChainLen.
func DecodeChain(data []byte) (Chain, error) {
	if len(data) > MaxChainLen*(MaxBodyBytes+128) {
		return nil, fmt.Errorf("%w: chain of %d bytes", ErrMalformed, len(data))
	}
	var ch Chain
	if err := Unmarshal(data, &ch); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(ch) == 0 || len(ch) > MaxChainLen {
		return nil, fmt.Errorf("%w: chain of %d certificates, want 1 to %d", ErrMalformed, len(ch), MaxChainLen)
	}
	return ch, nil
}

// Verifier checks chains against one organisation's root key.
type Verifier struct {
	Root crypto.PubKey
	Org  Fingerprint
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Revoked, if set, returns a non-nil error when any certificate of a
	// chain that otherwise verifies has been revoked.
	Revoked func(certs []Cert) error
}

// NewVerifier makes a verifier for the organisation of the given root key.
func NewVerifier(root crypto.PubKey) (*Verifier, error) {
	fp, err := FingerprintOf(root)
	if err != nil {
		return nil, err
	}
	return &Verifier{Root: root, Org: fp}, nil
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks every signature, link, organisation and validity period of
// ch and returns its decoded certificates, leaf first.
func (v *Verifier) Verify(ch Chain) ([]Cert, error) {
	if len(ch) == 0 || len(ch) > MaxChainLen {
		return nil, fmt.Errorf("%w: chain of %d certificates, want 1 to %d", ErrMalformed, len(ch), MaxChainLen)
	}
	certs := make([]Cert, len(ch))
	seen := make(map[peer.ID]bool, len(ch))
	for i, s := range ch {
		c, err := Decode(s.Body)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		// A peer twice in one chain is a loop, not a lineage.
		if seen[c.PeerID] {
			return nil, fmt.Errorf("%w: %s appears twice", ErrBadChain, c.PeerID)
		}
		seen[c.PeerID] = true
		certs[i] = c
	}
	now := v.now()
	for i, c := range certs {
		if c.Org != v.Org {
			return nil, fmt.Errorf("certificate %d (%s): %w", i, c.PeerID, ErrWrongOrg)
		}
		if now.Before(c.NotBefore.Add(-ClockSkew)) || now.After(c.NotAfter.Add(ClockSkew)) {
			return nil, fmt.Errorf("certificate %d (%s, valid %s to %s): %w", i, c.PeerID,
				c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), ErrExpired)
		}
		var issuer crypto.PubKey
		if i == len(certs)-1 {
			if !c.IsRoot() {
				return nil, fmt.Errorf("%w: last certificate (%s) has parent %s, want the root node", ErrBadChain, c.PeerID, c.Parent)
			}
			if c.Role == RoleClient {
				return nil, fmt.Errorf("%w: root node %s has role client", ErrBadChain, c.PeerID)
			}
			issuer = v.Root
		} else {
			up := certs[i+1]
			if c.Parent != up.PeerID {
				return nil, fmt.Errorf("%w: certificate %d names parent %s, next is %s", ErrBadChain, i, c.Parent, up.PeerID)
			}
			if !up.Role.CanIssue() {
				return nil, fmt.Errorf("%w: %s has role %s and cannot issue", ErrBadChain, up.PeerID, up.Role)
			}
			pub, err := up.PeerID.ExtractPublicKey()
			if err != nil {
				return nil, fmt.Errorf("%w: issuer %s: %v", ErrBadChain, up.PeerID, err)
			}
			issuer = pub
		}
		if err := verifySig(issuer, domainCert, ch[i].Body, ch[i].Sig); err != nil {
			return nil, fmt.Errorf("certificate %d (%s): %w", i, c.PeerID, err)
		}
	}
	if v.Revoked != nil {
		if err := v.Revoked(certs); err != nil {
			return nil, err
		}
	}
	return certs, nil
}
