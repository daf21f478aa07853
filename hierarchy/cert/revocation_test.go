package cert

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func mustSignRevocation(t testing.TB, r Revocation, key crypto.PrivKey) Signed {
	t.Helper()
	s, err := SignRevocation(r, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forgeRevocation signs any revocation body with key under domain.
func forgeRevocation(t testing.TB, b revocationBody, key crypto.PrivKey, domain string) Signed {
	t.Helper()
	data := mustMarshal(t, b)
	sig, err := sign(key, domain, data)
	if err != nil {
		t.Fatal(err)
	}
	return Signed{Body: data, Sig: sig}
}

func TestRevocationRoundTrip(t *testing.T) {
	tr := newTree(t)
	cases := []struct {
		name string
		r    Revocation
		key  crypto.PrivKey
	}{
		{"with a reason", Revocation{Target: tr.client.id, Revoker: tr.relay.id, At: testNow, Reason: "stolen laptop"}, tr.relay.key},
		{"without a reason", Revocation{Target: tr.relay.id, Revoker: tr.root.id, At: testNow}, tr.root.key},
		{"longest reason", Revocation{Target: tr.client.id, Revoker: tr.root.id, At: testNow, Reason: strings.Repeat("r", MaxReasonLen)}, tr.root.key},
		{"sub-second time truncated", Revocation{Target: tr.client.id, Revoker: tr.relay.id, At: testNow.Add(700 * time.Millisecond)}, tr.relay.key},
		{"time before 1970", Revocation{Target: tr.client.id, Revoker: tr.relay.id, At: time.Unix(-86400, 0)}, tr.relay.key},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSignRevocation(t, tc.r, tc.key)
			again := mustSignRevocation(t, tc.r, tc.key)
			if diff := cmp.Diff(s, again); diff != "" {
				t.Errorf("two signatures of one revocation differ:\n%s", diff)
			}
			got, err := OpenRevocation(s)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.r
			want.At = time.Unix(want.At.Unix(), 0).UTC()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("opened (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenRevocationRefuses(t *testing.T) {
	tr := newTree(t)
	good := Revocation{Target: tr.client.id, Revoker: tr.relay.id, At: testNow, Reason: "x"}
	s := mustSignRevocation(t, good, tr.relay.key)
	goodBody := func(mod func(*revocationBody)) revocationBody {
		b := revocationBody{V: 1, Target: []byte(good.Target), Revoker: []byte(good.Revoker), At: good.At.Unix(), Reason: good.Reason}
		mod(&b)
		return b
	}
	forge := func(mod func(*revocationBody)) Signed {
		return forgeRevocation(t, goodBody(mod), tr.relay.key, domainRevocation)
	}
	signRaw := func(body []byte) Signed {
		sig, err := sign(tr.relay.key, domainRevocation, body)
		if err != nil {
			t.Fatal(err)
		}
		return Signed{Body: body, Sig: sig}
	}
	cases := []struct {
		name string
		s    Signed
		want error
	}{
		// Signature.
		{"signed by another key than the revoker", mustSignRevocation(t, good, tr.root.key), ErrBadSignature},
		{"signed by the target", mustSignRevocation(t, good, tr.client.key), ErrBadSignature},
		{"tampered signature", Signed{Body: s.Body, Sig: func() []byte { b := bytes.Clone(s.Sig); b[5] ^= 0x10; return b }()}, ErrBadSignature},
		{"no signature", Signed{Body: s.Body}, ErrBadSignature},
		{"tampered reason", Signed{Body: bytes.Replace(s.Body, []byte{0x04, 0x61, 'x'}, []byte{0x04, 0x61, 'y'}, 1), Sig: s.Sig}, ErrBadSignature},
		{"revoker changed", forgeRevocation(t, goodBody(func(b *revocationBody) { b.Revoker = []byte(tr.root.id) }), tr.relay.key, domainRevocation), ErrBadSignature},
		{"signed as a certificate", forgeRevocation(t, goodBody(func(*revocationBody) {}), tr.relay.key, domainCert), ErrBadSignature},
		{"signed as a token", forgeRevocation(t, goodBody(func(*revocationBody) {}), tr.relay.key, domainToken), ErrBadSignature},

		// Body.
		{"empty", Signed{}, ErrMalformed},
		{"body over MaxBodyBytes", signRaw(make([]byte, MaxBodyBytes+1)), ErrMalformed},
		{"non-canonical head", signRaw(append([]byte{0xb8, s.Body[0] & 0x1f}, s.Body[1:]...)), ErrMalformed},
		{"trailing byte", signRaw(append(bytes.Clone(s.Body), 0x00)), ErrMalformed},
		{"unknown field", signRaw(append(append([]byte{s.Body[0] + 1}, s.Body[1:]...), 0x05, 0x00)), ErrMalformed},
		{"empty reason present", signRaw(mustMarshal(t, map[int]any{0: 1, 1: []byte(good.Target), 2: []byte(good.Revoker), 3: good.At.Unix(), 4: ""})), ErrMalformed},
		{"version 2", forge(func(b *revocationBody) { b.V = 2 }), ErrMalformed},
		{"no target", forge(func(b *revocationBody) { b.Target = nil }), ErrMalformed},
		{"reason too long", forge(func(b *revocationBody) { b.Reason = strings.Repeat("r", MaxReasonLen+1) }), ErrMalformed},
		{"no revoker", forge(func(b *revocationBody) { b.Revoker = nil }), ErrMalformed},
		{"revoker that is not a public key", forge(func(b *revocationBody) { b.Revoker = []byte("relay") }), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenRevocation(tc.s)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %+v, %v; want %v", r, err, tc.want)
			}
		})
	}
	if _, err := SignRevocation(Revocation{Target: tr.client.id, Revoker: tr.relay.id, At: testNow,
		Reason: strings.Repeat("r", MaxReasonLen+1)}, tr.relay.key); err == nil {
		t.Error("signed a revocation with a reason over MaxReasonLen")
	}
}

func TestRevocationAppliesTo(t *testing.T) {
	tr := newTree(t)
	o := tr.org
	stranger := o.child(t, tr.root, RoleRelay, "b", nil)
	strangerChild := o.child(t, stranger, RoleClient, "b", nil)
	// The chain under test: client → relay → root.
	chain, err := o.v.Verify(tr.client.chain)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name            string
		target, revoker peer.ID
		want            bool
	}{
		{"revoker is the parent", tr.client.id, tr.relay.id, true},
		{"revoker is the grandparent", tr.client.id, tr.root.id, true},
		{"revoker is the root, target the relay (subtree goes too)", tr.relay.id, tr.root.id, true},
		{"revoker is the target itself", tr.client.id, tr.client.id, false},
		{"root revokes itself", tr.root.id, tr.root.id, false},
		{"revoker is a descendant of the target", tr.relay.id, tr.client.id, false},
		{"leaf revokes the root", tr.root.id, tr.client.id, false},
		{"revoker not in the chain", tr.client.id, stranger.id, false},
		{"revoker not in the chain, below a stranger", tr.client.id, strangerChild.id, false},
		{"revoker is the org root key", tr.client.id, idOf(t, o.rootKey), false},
		{"target not in the chain", stranger.id, tr.root.id, false},
		{"target not in the chain, revoker its parent", strangerChild.id, stranger.id, false},
		{"neither in the chain", strangerChild.id, stranger.id, false},
	}
	keys := map[peer.ID]crypto.PrivKey{tr.root.id: tr.root.key, tr.relay.id: tr.relay.key, tr.client.id: tr.client.key,
		stranger.id: stranger.key, strangerChild.id: strangerChild.key, idOf(t, o.rootKey): o.rootKey}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSignRevocation(t, Revocation{Target: tc.target, Revoker: tc.revoker, At: testNow}, keys[tc.revoker])
			r, err := OpenRevocation(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.AppliesTo(chain); got != tc.want {
				t.Errorf("AppliesTo = %v, want %v", got, tc.want)
			}
		})
	}
	// Nothing applies to an empty chain.
	if (Revocation{Target: tr.client.id, Revoker: tr.relay.id}).AppliesTo(nil) {
		t.Error("applies to an empty chain")
	}
}
