package cert

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ma "github.com/multiformats/go-multiaddr"
)

// fuzzSeeds are valid encodings of every record, built with real keys.
type fuzzSeeds struct {
	tr     tree
	tokens []string
	revs   []Signed
}

func newFuzzSeeds(f *testing.F) fuzzSeeds {
	tr := newTree(f)
	tok := Token{Org: tr.org.v.Org, Parent: tr.relay.id, Role: RoleClient, Site: "a",
		ExpiresAt: testNow, Nonce: NewNonce(), Issuer: tr.relay.id}
	full := tok
	full.Groups = []string{"tills", "pos"}
	full.Addrs = []ma.Multiaddr{mustAddr(f, "/ip4/192.0.2.1/tcp/4001"), mustAddr(f, "/dns4/relay.example/udp/4001/quic-v1")}
	byRoot := tok
	byRoot.Role, byRoot.Issuer = RoleRelay, tr.root.id
	return fuzzSeeds{
		tr:     tr,
		tokens: []string{mustSign(f, tok, tr.relay.key), mustSign(f, full, tr.relay.key), mustSign(f, byRoot, tr.root.key)},
		revs: []Signed{
			mustSignRevocation(f, Revocation{Target: tr.client.id, Revoker: tr.relay.id, At: testNow, Reason: "x"}, tr.relay.key),
			mustSignRevocation(f, Revocation{Target: tr.relay.id, Revoker: tr.root.id, At: testNow}, tr.root.key),
		},
	}
}

// isSentinel reports whether err wraps one of the package's sentinels.
func isSentinel(err error) bool {
	for _, s := range []error{ErrMalformed, ErrBadSignature, ErrExpired, ErrWrongOrg, ErrBadChain} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzDecode(f *testing.F) {
	sd := newFuzzSeeds(f)
	for _, s := range sd.tr.client.chain {
		f.Add(s.Body)
	}
	leaf := sd.tr.client.chain[0].Body
	es := splitMap(f, leaf)
	f.Add([]byte{})
	f.Add([]byte{0xa0})
	f.Add([]byte{0xbf, 0xff})
	f.Add([]byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(leaf[:len(leaf)/2])
	f.Add(append([]byte{0xb8, leaf[0] & 0x1f}, leaf[1:]...))                                     // map head in long form
	f.Add(joinMap(shortHead(len(es)), replace(es, 5, mustMarshal(f, []string{"tills", "pos"})))) // groups unsorted
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid certificate: %v", err)
		}
		// One certificate, one byte form: what decodes re-encodes to the input.
		enc, err := c.encode()
		if err != nil {
			t.Fatalf("decoded certificate does not encode: %v", err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("not canonical: decoded\n% x\nre-encoded\n% x", data, enc)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("decode(encode(c)) != c:\n%s", diff)
		}
	})
}

func FuzzDecodeChain(f *testing.F) {
	sd := newFuzzSeeds(f)
	for _, n := range []testNode{sd.tr.root, sd.tr.relay, sd.tr.client} {
		f.Add(mustMarshal(f, n.chain))
	}
	raw := mustMarshal(f, sd.tr.client.chain)
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0xa0})
	f.Add([]byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // array claiming 2^64 items
	f.Add(raw[:len(raw)/2])
	f.Add(append(append([]byte{0x9f}, raw[1:]...), 0xff)) // indefinite-length array
	f.Add(mustMarshal(f, Chain{sd.tr.client.chain[0], sd.tr.root.chain[0]}))
	v := sd.tr.org.v
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := DecodeChain(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		if len(ch) == 0 || len(ch) > MaxChainLen {
			t.Fatalf("DecodeChain returned %d certificates", len(ch))
		}
		// The chain's own encoding round-trips.
		enc, err := EncodeChain(ch)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeChain(enc)
		if err != nil {
			t.Fatalf("re-encoded chain does not decode: %v", err)
		}
		if diff := cmp.Diff(ch, back); diff != "" {
			t.Fatalf("chain round trip:\n%s", diff)
		}
		certs, err := v.Verify(ch)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if len(certs) != len(ch) || !certs[len(certs)-1].IsRoot() {
			t.Fatalf("verified %d certificates of %d", len(certs), len(ch))
		}
		for i, c := range certs {
			if c.Org != v.Org {
				t.Fatalf("certificate %d of another organisation", i)
			}
			if i+1 < len(certs) && c.Parent != certs[i+1].PeerID {
				t.Fatalf("certificate %d does not link to %d", i, i+1)
			}
			enc, err := c.encode()
			if err != nil || !bytes.Equal(enc, ch[i].Body) {
				t.Fatalf("certificate %d: verified body is not canonical (%v)", i, err)
			}
		}
	})
}

func FuzzParseToken(f *testing.F) {
	sd := newFuzzSeeds(f)
	for _, s := range sd.tokens {
		f.Add(s)
		f.Add(" " + s + "\n")
	}
	good := sd.tokens[0]
	f.Add("")
	f.Add(TokenPrefix)
	f.Add(TokenPrefix + "oA")
	f.Add(good[:len(good)/2])
	f.Add(strings.TrimPrefix(good, TokenPrefix))
	f.Add(TokenPrefix + strings.Repeat("A", MaxTokenLen))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrToken) {
				t.Fatalf("error without ErrToken: %v", err)
			}
			return
		}
		if tok.Role != RoleClient && tok.Role != RoleRelay {
			t.Fatalf("ParseToken accepted role %q", tok.Role)
		}
		if len(tok.Nonce) != 16 || tok.Parent == "" || tok.Issuer == "" || len(tok.Addrs) > 32 {
			t.Fatalf("ParseToken accepted %+v", tok)
		}
		// The text may be lenient (blanks, envelope), the signed body is not:
		// the token in its canonical text form parses to the same token.
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), TokenPrefix))
		if err != nil {
			t.Fatal(err)
		}
		var sg Signed
		if err := Unmarshal(raw, &sg); err != nil {
			t.Fatal(err)
		}
		var b tokenBody
		if err := Unmarshal(sg.Body, &b); err != nil {
			t.Fatal(err)
		}
		if enc, err := Marshal(b); err != nil || !bytes.Equal(enc, sg.Body) {
			t.Fatalf("accepted a non-canonical token body (%v)", err)
		}
		again, err := ParseToken(tokenText(t, sg.Body, sg.Sig))
		if err != nil {
			t.Fatalf("canonical text refused: %v", err)
		}
		if diff := cmp.Diff(tok, again, cmpAddrs); diff != "" {
			t.Fatalf("canonical text parses differently:\n%s", diff)
		}
	})
}

func FuzzOpenRevocation(f *testing.F) {
	sd := newFuzzSeeds(f)
	for _, r := range sd.revs {
		f.Add(r.Body, r.Sig)
	}
	r0 := sd.revs[0]
	f.Add([]byte{}, []byte{})
	f.Add([]byte{0xa0}, []byte{})
	f.Add([]byte{0xbf, 0xff}, r0.Sig)
	f.Add(r0.Body[:len(r0.Body)/2], r0.Sig)
	f.Add(append([]byte{0xb8, r0.Body[0] & 0x1f}, r0.Body[1:]...), r0.Sig)
	f.Add(r0.Body, r0.Sig[:32])
	f.Fuzz(func(t *testing.T, body, sig []byte) {
		r, err := OpenRevocation(Signed{Body: body, Sig: sig})
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if r.Target == "" || r.Revoker == "" || len(r.Reason) > MaxReasonLen {
			t.Fatalf("OpenRevocation accepted %+v", r)
		}
		enc, err := Marshal(revocationBody{V: 1, Target: []byte(r.Target), Revoker: []byte(r.Revoker), At: r.At.Unix(), Reason: r.Reason})
		if err != nil || !bytes.Equal(enc, body) {
			t.Fatalf("not canonical: opened\n% x\nre-encoded\n% x (%v)", body, enc, err)
		}
	})
}
