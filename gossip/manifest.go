// Package gossip carries jobs down the tree: manifests signed by an
// administrator, verified by every node, spread through one gossipsub topic
// per subtree and caught up by a sync protocol after an absence.
//
// This file defines the manifest: canonical bytes (RFC 8949 core
// deterministic CBOR, refused when not canonical), an Ed25519 signature by
// the administrator over a domain-separated prefix, and the administrator's
// certificate.
package gossip

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/hierarchy/cert"
)

// MaxManifestBytes bounds a signed manifest on the wire, the administrator's
// certificate and its issuer's chain included.
const MaxManifestBytes = 64 << 10

// Rejection reasons, counted and logged by every node.
var (
	ErrMalformed  = errors.New("malformed manifest")
	ErrOversized  = errors.New("oversized manifest")
	ErrSignature  = errors.New("bad manifest signature")
	ErrUnknownAdm = errors.New("unknown administrator")
	ErrOutOfScope = errors.New("target outside the administrator's scope")
	ErrExpired    = errors.New("manifest expired")
	ErrReplayed   = errors.New("manifest replayed")
)

// Manifest is one job as an administrator signed it.
type Manifest struct {
	JobID     string // 32 hex digits
	Seq       uint64 // per administrator, increasing
	CreatedAt time.Time
	NotBefore time.Time
	ExpiresAt time.Time
	Type      string
	Params    map[string]string
	Target    Selector
	Package   *Package
}

// Package names the content a job needs.
type Package struct {
	CID  string `cbor:"0,keyasint"`
	Size uint64 `cbor:"1,keyasint"`
}

// Term is one condition of a selector: the node's Key must be one of Values.
type Term struct {
	Key    string   `cbor:"0,keyasint"`
	Values []string `cbor:"1,keyasint,omitempty"`
}

// Selector picks the target nodes: every term must hold (AND); within a
// term any value will do (OR). Keys: all, site, group, role, peer, subtree.
type Selector []Term

// ParseSelector reads --target arguments: "all", "site=S", "group=G",
// "role=client|relay", "peer=P1,P2", "subtree=P".
func ParseSelector(args []string) (Selector, error) {
	if len(args) == 0 {
		return nil, errors.New("no target: use --target all, or site=, group=, role=, peer=, subtree=")
	}
	var s Selector
	for _, a := range args {
		if a == "all" {
			s = append(s, Term{Key: "all"})
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("target %q: want KEY=VALUE or all", a)
		}
		vals := strings.Split(v, ",")
		switch k {
		case "site", "group":
		case "role":
			for _, r := range vals {
				if _, err := cert.ParseRole(r); err != nil {
					return nil, fmt.Errorf("target %q: %w", a, err)
				}
			}
		case "peer", "subtree":
			if k == "subtree" && len(vals) != 1 {
				return nil, fmt.Errorf("target %q: one subtree at a time (several subtree= terms would all have to hold)", a)
			}
			for _, p := range vals {
				if _, err := peer.Decode(p); err != nil {
					return nil, fmt.Errorf("target %q: %q is not a peer ID", a, p)
				}
			}
		default:
			return nil, fmt.Errorf("target %q: unknown key %q; use all, site, group, role, peer or subtree", a, k)
		}
		s = append(s, Term{Key: k, Values: vals})
	}
	return s, nil
}

// String gives the selector as it is typed.
func (s Selector) String() string {
	parts := make([]string, 0, len(s))
	for _, t := range s {
		if t.Key == "all" {
			parts = append(parts, "all")
		} else {
			parts = append(parts, t.Key+"="+strings.Join(t.Values, ","))
		}
	}
	return strings.Join(parts, " ")
}

// Matches reports whether the node with the verified chain (leaf first)
// is targeted.
func (s Selector) Matches(chain []cert.Cert) bool {
	self := chain[0]
	lineage := make([]string, len(chain))
	for i, c := range chain {
		lineage[i] = c.PeerID.String()
	}
	return s.MatchNode(string(self.Role), self.Site, self.Groups, lineage)
}

// MatchNode reports whether a node of this role, site and groups is
// targeted; lineage is its peer ID followed by its ancestors'. A managing
// node uses it on its tree view to know how many destinations to expect.
func (s Selector) MatchNode(role, site string, groups, lineage []string) bool {
	for _, t := range s {
		ok := false
		switch t.Key {
		case "all":
			ok = true
		case "site":
			ok = slices.Contains(t.Values, site)
		case "group":
			ok = slices.ContainsFunc(t.Values, func(g string) bool { return slices.Contains(groups, g) })
		case "role":
			ok = slices.Contains(t.Values, role)
		case "peer":
			ok = len(lineage) > 0 && slices.Contains(t.Values, lineage[0])
		case "subtree":
			ok = slices.Contains(lineage, t.Values[0])
		}
		if !ok {
			return false
		}
	}
	return len(s) > 0
}

type body struct {
	V         uint8             `cbor:"0,keyasint"`
	JobID     []byte            `cbor:"1,keyasint"`
	Seq       uint64            `cbor:"2,keyasint"`
	CreatedAt int64             `cbor:"3,keyasint"`
	NotBefore int64             `cbor:"4,keyasint"`
	ExpiresAt int64             `cbor:"5,keyasint"`
	Type      string            `cbor:"6,keyasint"`
	Params    map[string]string `cbor:"7,keyasint,omitempty"`
	Target    Selector          `cbor:"8,keyasint"`
	Package   *Package          `cbor:"9,keyasint,omitempty"`
}

// Signed is a manifest as it travels.
type Signed struct {
	Body  []byte       `cbor:"0,keyasint"`
	Sig   []byte       `cbor:"1,keyasint"`
	Admin admin.Signed `cbor:"2,keyasint"`
}

const domain = "swdist/manifest/v1\x00"

// NewJobID returns a random job ID.
func NewJobID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func (m Manifest) encode() ([]byte, error) {
	id, err := hex.DecodeString(m.JobID)
	if err != nil || len(id) != 16 {
		return nil, fmt.Errorf("job id %q: want 32 hex digits", m.JobID)
	}
	if m.Type == "" {
		return nil, errors.New("job type is empty")
	}
	if len(m.Target) == 0 {
		return nil, errors.New("no target")
	}
	if !m.ExpiresAt.After(m.NotBefore) {
		return nil, errors.New("the job expires before it may start")
	}
	return cert.Marshal(body{V: 1, JobID: id, Seq: m.Seq, CreatedAt: m.CreatedAt.Unix(), NotBefore: m.NotBefore.Unix(),
		ExpiresAt: m.ExpiresAt.Unix(), Type: m.Type, Params: m.Params, Target: m.Target, Package: m.Package})
}

// Sign encodes m and signs it with the administrator's key.
func Sign(m Manifest, key crypto.PrivKey, adminCert admin.Signed) (Signed, error) {
	data, err := m.encode()
	if err != nil {
		return Signed{}, fmt.Errorf("encode manifest: %w", err)
	}
	sig, err := key.Sign(append([]byte(domain), data...))
	if err != nil {
		return Signed{}, fmt.Errorf("sign manifest: %w", err)
	}
	s := Signed{Body: data, Sig: sig, Admin: adminCert}
	if raw, err := Encode(s); err != nil {
		return Signed{}, err
	} else if len(raw) > MaxManifestBytes {
		return Signed{}, fmt.Errorf("%w: %d bytes, at most %d", ErrOversized, len(raw), MaxManifestBytes)
	}
	return s, nil
}

// Encode gives a signed manifest's wire form.
func Encode(s Signed) ([]byte, error) { return cert.Marshal(s) }

// Decode parses a signed manifest's wire form, bounded in size.
func Decode(raw []byte) (Signed, error) {
	if len(raw) > MaxManifestBytes {
		return Signed{}, fmt.Errorf("%w: %d bytes, at most %d", ErrOversized, len(raw), MaxManifestBytes)
	}
	var s Signed
	if err := cert.Unmarshal(raw, &s); err != nil {
		return Signed{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return s, nil
}

func decodeBody(data []byte) (Manifest, error) {
	var b body
	if err := cert.Unmarshal(data, &b); err != nil {
		return Manifest{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if again, err := cert.Marshal(b); err != nil || string(again) != string(data) {
		return Manifest{}, fmt.Errorf("%w: not canonically encoded", ErrMalformed)
	}
	if b.V != 1 || len(b.JobID) != 16 || b.Type == "" || len(b.Target) == 0 {
		return Manifest{}, fmt.Errorf("%w: fields", ErrMalformed)
	}
	if _, err := ParseSelector(strings.Fields(b.Target.String())); err != nil {
		return Manifest{}, fmt.Errorf("%w: target: %v", ErrMalformed, err)
	}
	return Manifest{JobID: hex.EncodeToString(b.JobID), Seq: b.Seq, CreatedAt: time.Unix(b.CreatedAt, 0).UTC(),
		NotBefore: time.Unix(b.NotBefore, 0).UTC(), ExpiresAt: time.Unix(b.ExpiresAt, 0).UTC(),
		Type: b.Type, Params: b.Params, Target: b.Target, Package: b.Package}, nil
}

// TypeCancel is the type of a manifest that cancels the job named by its
// ParamJob where it has not started; it is never run itself.
const (
	TypeCancel = "cancel"
	ParamJob   = "job"
)

// Verified is a manifest whose signature and administrator checked out.
type Verified struct {
	Manifest
	Admin  admin.Cert
	Issuer []cert.Cert // the admin's issuer's chain, leaf first
	Raw    []byte      // the signed wire form, to store and pass on unchanged
}

// Open checks s at time now: the administrator's certificate against the
// organisation, the signature, and the expiry. Scope, targeting and replay
// depend on the receiving node and are checked by the caller. An authentic
// manifest that has expired comes back with ErrExpired.
func Open(v *cert.Verifier, s Signed, now time.Time) (Verified, error) {
	m, err := decodeBody(s.Body)
	if err != nil {
		return Verified{}, err
	}
	a, issuer, err := admin.Verify(v, s.Admin, now)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrUnknownAdm, err)
	}
	if ok, err := a.Key.Verify(append([]byte(domain), s.Body...), s.Sig); err != nil || !ok {
		return Verified{}, fmt.Errorf("job %s: %w", m.JobID, ErrSignature)
	}
	raw, err := Encode(s)
	if err != nil {
		return Verified{}, err
	}
	v2 := Verified{Manifest: m, Admin: a, Issuer: issuer, Raw: raw}
	if now.After(m.ExpiresAt) {
		// Authentic but too late: returned with the error, so that a node
		// it targets can record that it will not run it.
		return v2, fmt.Errorf("job %s expired at %s: %w", m.JobID, m.ExpiresAt.Format(time.RFC3339), ErrExpired)
	}
	return v2, nil
}

// ScopeCovers reports whether the administrator of v may target the node
// with the verified chain. A selector naming a subtree is also bounded by
// the scope, so one outside it is refused as a whole.
func (v Verified) ScopeCovers(chain []cert.Cert) bool { return admin.Covers(v.Admin.Scope, chain) }

// ScopeBelow reports whether the administrator's scope lies below the node
// self: the node must pass the manifest on, though it is not itself in
// scope.
func (v Verified) ScopeBelow(self peer.ID) bool {
	return v.Admin.Scope != self && slices.ContainsFunc(v.Issuer, func(c cert.Cert) bool { return c.PeerID == self })
}

// Describe decodes a stored manifest for display, without checking it
// again (it was checked when it arrived).
func Describe(raw []byte) (Manifest, admin.Cert, error) {
	s, err := Decode(raw)
	if err != nil {
		return Manifest{}, admin.Cert{}, err
	}
	m, err := decodeBody(s.Body)
	if err != nil {
		return Manifest{}, admin.Cert{}, err
	}
	a, err := admin.Decode(s.Admin.Body)
	if err != nil {
		return Manifest{}, admin.Cert{}, err
	}
	return m, a, nil
}
