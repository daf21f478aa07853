package cert

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Revocation withdraws a node's membership. It is signed by the revoking
// node's libp2p key and takes effect only on chains in which the revoker is
// an ancestor of the target (the root node is everyone's ancestor). A chain
// that contains a revoked certificate anywhere is refused, so revoking a
// relay cuts off its whole subtree: a relay that must be revoked may have
// issued certificates to anyone, and its children must enroll again.
type Revocation struct {
	Target  peer.ID
	Revoker peer.ID
	At      time.Time
	Reason  string
}

type revocationBody struct {
	V       uint8  `cbor:"0,keyasint"`
	Target  []byte `cbor:"1,keyasint"`
	Revoker []byte `cbor:"2,keyasint"`
	At      int64  `cbor:"3,keyasint"`
	Reason  string `cbor:"4,keyasint,omitempty"`
}

// MaxReasonLen bounds a revocation's reason text.
const MaxReasonLen = 256

// SignRevocation encodes and signs r with the revoker's key.
func SignRevocation(r Revocation, key crypto.PrivKey) (Signed, error) {
	if len(r.Reason) > MaxReasonLen {
		return Signed{}, fmt.Errorf("reason longer than %d bytes", MaxReasonLen)
	}
	data, err := Marshal(revocationBody{V: 1, Target: []byte(r.Target), Revoker: []byte(r.Revoker), At: r.At.Unix(), Reason: r.Reason})
	if err != nil {
		return Signed{}, err
	}
	sig, err := sign(key, domainRevocation, data)
	if err != nil {
		return Signed{}, fmt.Errorf("sign revocation: %w", err)
	}
	return Signed{Body: data, Sig: sig}, nil
}

// OpenRevocation decodes s and checks that the revoker signed it.
func OpenRevocation(s Signed) (Revocation, error) {
	if len(s.Body) > MaxBodyBytes {
		return Revocation{}, fmt.Errorf("%w: revocation of %d bytes", ErrMalformed, len(s.Body))
	}
	var b revocationBody
	if err := unmarshalCanonical(s.Body, &b); err != nil {
		return Revocation{}, fmt.Errorf("%w: revocation: %v", ErrMalformed, err)
	}
	r := Revocation{Target: peer.ID(b.Target), Revoker: peer.ID(b.Revoker), At: time.Unix(b.At, 0).UTC(), Reason: b.Reason}
	if b.V != 1 || len(r.Reason) > MaxReasonLen || r.Target.Validate() != nil {
		return Revocation{}, fmt.Errorf("%w: revocation fields", ErrMalformed)
	}
	pub, err := r.Revoker.ExtractPublicKey()
	if err != nil {
		return Revocation{}, fmt.Errorf("%w: revoker: %v", ErrMalformed, err)
	}
	if err := verifySig(pub, domainRevocation, s.Body, s.Sig); err != nil {
		return Revocation{}, fmt.Errorf("revocation of %s: %w", r.Target, err)
	}
	return r, nil
}

// AppliesTo reports whether r revokes a certificate of the verified chain
// certs (leaf first): its target is in the chain and its revoker stands above
// the target in the same chain.
func (r Revocation) AppliesTo(certs []Cert) bool {
	ti := slices.IndexFunc(certs, func(c Cert) bool { return c.PeerID == r.Target })
	ri := slices.IndexFunc(certs, func(c Cert) bool { return c.PeerID == r.Revoker })
	return ti >= 0 && ri > ti
}
