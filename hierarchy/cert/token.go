package cert

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TokenPrefix starts every join token, so that a pasted token is recognised.
const TokenPrefix = "swdist-join-"

// MaxTokenLen bounds the text of a join token.
const MaxTokenLen = 8 << 10

// ErrToken marks a token that is malformed, forged or not for this node.
var ErrToken = errors.New("invalid join token")

// Token is a one-time permission to enroll one node under Parent. It is
// signed by the node that minted it (the parent itself or one of the
// parent's ancestors), so the parent can check it against its own chain, and
// its nonce is recorded by the parent when used.
type Token struct {
	Org       Fingerprint
	Parent    peer.ID
	Addrs     []ma.Multiaddr // where to reach the parent
	Role      Role
	Site      string
	Groups    []string
	ExpiresAt time.Time
	Nonce     []byte
	Issuer    peer.ID
}

type tokenBody struct {
	V         uint8    `cbor:"0,keyasint"`
	Org       []byte   `cbor:"1,keyasint"`
	Parent    []byte   `cbor:"2,keyasint"`
	Addrs     [][]byte `cbor:"3,keyasint"`
	Role      string   `cbor:"4,keyasint"`
	Site      string   `cbor:"5,keyasint"`
	Groups    []string `cbor:"6,keyasint,omitempty"`
	ExpiresAt int64    `cbor:"7,keyasint"`
	Nonce     []byte   `cbor:"8,keyasint"`
	Issuer    []byte   `cbor:"9,keyasint"`
}

// NewNonce returns 16 random bytes.
func NewNonce() []byte {
	n := make([]byte, 16)
	if _, err := rand.Read(n); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// Sign encodes and signs t with the minting node's key; the result is the
// text an operator copies to the new machine.
func (t Token) Sign(key crypto.PrivKey) (string, error) {
	if t.Role != RoleClient && t.Role != RoleRelay {
		return "", fmt.Errorf("a token enrolls a client or a relay, not a %q", t.Role)
	}
	if err := checkName("site", t.Site, true); err != nil {
		return "", err
	}
	if len(t.Groups) > MaxGroups {
		return "", fmt.Errorf("%d groups, at most %d", len(t.Groups), MaxGroups)
	}
	for _, g := range t.Groups {
		if err := checkName("group", g, true); err != nil {
			return "", err
		}
	}
	b := tokenBody{V: 1, Org: t.Org[:], Parent: []byte(t.Parent), Role: string(t.Role),
		Site: t.Site, Groups: t.Groups, ExpiresAt: t.ExpiresAt.Unix(), Nonce: t.Nonce, Issuer: []byte(t.Issuer)}
	for _, a := range t.Addrs {
		b.Addrs = append(b.Addrs, a.Bytes())
	}
	data, err := Marshal(b)
	if err != nil {
		return "", fmt.Errorf("encode token: %w", err)
	}
	sig, err := sign(key, domainToken, data)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	raw, err := Marshal(Signed{Body: data, Sig: sig})
	if err != nil {
		return "", err
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(raw), nil
}

// ParseToken decodes a token and checks its own signature. Whether the
// issuer may mint tokens for this parent, and whether the token is fresh and
// unused, is for the parent to decide.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxTokenLen {
		return Token{}, fmt.Errorf("%w: %d characters, at most %d", ErrToken, len(s), MaxTokenLen)
	}
	enc, ok := strings.CutPrefix(s, TokenPrefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: it does not start with %q (copy the whole output of 'swdist token create')", ErrToken, TokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %v (was it cut while copying?)", ErrToken, err)
	}
	var sg Signed
	if err := Unmarshal(raw, &sg); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	var b tokenBody
	if err := unmarshalCanonical(sg.Body, &b); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	if b.V != 1 || len(b.Org) != len(Fingerprint{}) || len(b.Nonce) != 16 || len(b.Addrs) > 32 {
		return Token{}, fmt.Errorf("%w: bad fields", ErrToken)
	}
	t := Token{Parent: peer.ID(b.Parent), Role: Role(b.Role), Site: b.Site, Groups: b.Groups,
		ExpiresAt: time.Unix(b.ExpiresAt, 0).UTC(), Nonce: b.Nonce, Issuer: peer.ID(b.Issuer)}
	copy(t.Org[:], b.Org)
	for _, a := range b.Addrs {
		addr, err := ma.NewMultiaddrBytes(a)
		if err != nil {
			return Token{}, fmt.Errorf("%w: parent address: %v", ErrToken, err)
		}
		t.Addrs = append(t.Addrs, addr)
	}
	if t.Role != RoleClient && t.Role != RoleRelay {
		return Token{}, fmt.Errorf("%w: role %q", ErrToken, t.Role)
	}
	if err := t.Parent.Validate(); err != nil {
		return Token{}, fmt.Errorf("%w: parent: %v", ErrToken, err)
	}
	pub, err := t.Issuer.ExtractPublicKey()
	if err != nil {
		return Token{}, fmt.Errorf("%w: issuer: %v", ErrToken, err)
	}
	if err := verifySig(pub, domainToken, sg.Body, sg.Sig); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	return t, nil
}

// CheckFor reports whether the node holding chain (already verified, leaf
// first) may redeem t now: it is the token's parent, of the token's
// organisation, the token has not expired, and it was minted by this node or
// one of its ancestors.
func (t Token) CheckFor(chain []Cert, now time.Time) error {
	self := chain[0]
	if t.Org != self.Org {
		return fmt.Errorf("%w: it is for organisation %s, this is %s", ErrToken, t.Org, self.Org)
	}
	if t.Parent != self.PeerID {
		return fmt.Errorf("%w: it is for parent %s, not %s", ErrToken, t.Parent, self.PeerID)
	}
	if now.After(t.ExpiresAt) {
		return fmt.Errorf("%w: it expired at %s; create a new one with 'swdist token create'", ErrToken, t.ExpiresAt.Format(time.RFC3339))
	}
	if !slices.ContainsFunc(chain, func(c Cert) bool { return c.PeerID == t.Issuer }) {
		return fmt.Errorf("%w: minted by %s, which is not this node nor one of its ancestors", ErrToken, t.Issuer)
	}
	return nil
}
