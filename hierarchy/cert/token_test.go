package cert

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
)

// cmpAddrs compares multiaddrs by value.
var cmpAddrs = cmp.Comparer(func(a, b ma.Multiaddr) bool { return a.Equal(b) })

// tokenBodyOf is the body Sign encodes for tok.
func tokenBodyOf(tok Token) tokenBody {
	b := tokenBody{V: 1, Org: tok.Org[:], Parent: []byte(tok.Parent), Role: string(tok.Role), Site: tok.Site,
		Groups: tok.Groups, ExpiresAt: tok.ExpiresAt.Unix(), Nonce: tok.Nonce, Issuer: []byte(tok.Issuer)}
	for _, a := range tok.Addrs {
		b.Addrs = append(b.Addrs, a.Bytes())
	}
	return b
}

// tokenText wraps an encoded body and its signature as Sign does.
func tokenText(t testing.TB, body, sig []byte) string {
	t.Helper()
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(mustMarshal(t, Signed{Body: body, Sig: sig}))
}

// forgeToken signs any token body with key under domain.
func forgeToken(t testing.TB, b tokenBody, key crypto.PrivKey, domain string) string {
	t.Helper()
	data := mustMarshal(t, b)
	sig, err := sign(key, domain, data)
	if err != nil {
		t.Fatal(err)
	}
	return tokenText(t, data, sig)
}

// splitToken returns the body and signature of a token's text.
func splitToken(t testing.TB, s string) Signed {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, TokenPrefix))
	if err != nil {
		t.Fatal(err)
	}
	var sg Signed
	if err := Unmarshal(raw, &sg); err != nil {
		t.Fatal(err)
	}
	return sg
}

func mustSign(t testing.TB, tok Token, key crypto.PrivKey) string {
	t.Helper()
	s, err := tok.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAddr(t testing.TB, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTokenRoundTrip(t *testing.T) {
	tr := newTree(t)
	base := Token{Org: tr.org.v.Org, Parent: tr.relay.id, Role: RoleClient, Site: "a",
		ExpiresAt: testNow.Add(time.Hour), Nonce: NewNonce(), Issuer: tr.relay.id}
	with := func(mod func(*Token)) Token { tok := base; mod(&tok); return tok }
	cases := []struct {
		name string
		tok  Token
		key  crypto.PrivKey
		wrap func(string) string // how the operator pasted it
	}{
		{"client, minimal", base, tr.relay.key, nil},
		{"client with groups and addresses", with(func(tok *Token) {
			tok.Groups = []string{"tills", "pos"}
			tok.Addrs = []ma.Multiaddr{mustAddr(t, "/ip4/192.0.2.1/tcp/4001"), mustAddr(t, "/ip6/2001:db8::1/udp/4001/quic-v1")}
		}), tr.relay.key, nil},
		{"relay minted by the root", with(func(tok *Token) { tok.Role, tok.Issuer = RoleRelay, tr.root.id }), tr.root.key, nil},
		{"sub-second expiry truncated", with(func(tok *Token) { tok.ExpiresAt = tok.ExpiresAt.Add(500 * time.Millisecond) }), tr.relay.key, nil},
		{"pasted with blanks around", base, tr.relay.key, func(s string) string { return "  \n" + s + "\r\n\t" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := mustSign(t, tc.tok, tc.key)
			if again := mustSign(t, tc.tok, tc.key); again != text {
				t.Errorf("two signatures of one token differ")
			}
			if !strings.HasPrefix(text, TokenPrefix) || len(text) > MaxTokenLen {
				t.Fatalf("token text %q", text)
			}
			if tc.wrap != nil {
				text = tc.wrap(text)
			}
			got, err := ParseToken(text)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.tok
			want.ExpiresAt = time.Unix(want.ExpiresAt.Unix(), 0).UTC()
			if diff := cmp.Diff(want, got, cmpAddrs); diff != "" {
				t.Errorf("parsed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseTokenRefuses(t *testing.T) {
	tr := newTree(t)
	good := Token{Org: tr.org.v.Org, Parent: tr.relay.id, Role: RoleClient, Site: "a", Groups: []string{"tills"},
		Addrs: []ma.Multiaddr{mustAddr(t, "/ip4/192.0.2.1/tcp/4001")}, ExpiresAt: testNow.Add(time.Hour), Nonce: NewNonce(), Issuer: tr.relay.id}
	text := mustSign(t, good, tr.relay.key)
	if _, err := ParseToken(text); err != nil {
		t.Fatalf("the good token: %v", err)
	}
	sg := splitToken(t, text)
	enc := strings.TrimPrefix(text, TokenPrefix)
	body := func(mod func(*tokenBody)) tokenBody {
		b := tokenBodyOf(good)
		mod(&b)
		return b
	}
	forge := func(mod func(*tokenBody)) string { return forgeToken(t, body(mod), tr.relay.key, domainToken) }

	cases := []struct {
		name string
		text string
	}{
		// Text.
		{"empty", ""},
		{"prefix only", TokenPrefix},
		{"no prefix", enc},
		{"wrong prefix", "swdist-token-" + enc},
		{"prefix in upper case", strings.ToUpper(TokenPrefix) + enc},
		{"prefix twice", TokenPrefix + text},
		{"truncated base64", text[:len(TokenPrefix)+(len(enc)/4-1)*4+1]},
		{"truncated at a base64 boundary", text[:len(TokenPrefix)+(len(enc)/8)*4]},
		{"cut in half", text[:len(text)/2]},
		{"padded base64", TokenPrefix + base64.URLEncoding.EncodeToString(mustMarshal(t, sg))},
		{"standard base64 alphabet", TokenPrefix + strings.NewReplacer("-", "+", "_", "/").Replace(enc) + "+/"},
		{"space inside", text[:40] + " " + text[40:]},
		{"oversize", TokenPrefix + strings.Repeat("A", MaxTokenLen)},
		{"oversize valid token", text + strings.Repeat("A", MaxTokenLen)},

		// Envelope and signature.
		{"tampered text", func() string {
			b := []byte(text)
			i := len(TokenPrefix) + len(enc)/2
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return string(b)
		}()},
		{"tampered body", func() string {
			b := bytes.Clone(sg.Body)
			i := bytes.Index(b, []byte{0x05, 0x61, 'a'}) // key 5 (site), text "a"
			if i < 0 {
				t.Fatal("site not found in token body")
			}
			b[i+2] = 'b'
			return tokenText(t, b, sg.Sig)
		}()},
		{"tampered signature", func() string {
			s := bytes.Clone(sg.Sig)
			s[0] ^= 1
			return tokenText(t, sg.Body, s)
		}()},
		{"no signature", tokenText(t, sg.Body, nil)},
		{"signed by another key than the issuer", forgeToken(t, tokenBodyOf(good), tr.root.key, domainToken)},
		{"signed as a certificate", forgeToken(t, tokenBodyOf(good), tr.relay.key, domainCert)},
		{"signed as a revocation", forgeToken(t, tokenBodyOf(good), tr.relay.key, domainRevocation)},
		{"envelope with an unknown field", TokenPrefix + base64.RawURLEncoding.EncodeToString(
			append([]byte{0xa3}, append(mustMarshal(t, sg)[1:], 0x02, 0x00)...))},
		{"envelope is an array", TokenPrefix + base64.RawURLEncoding.EncodeToString(mustMarshal(t, []any{sg.Body, sg.Sig}))},

		// Body, validly signed by the issuer.
		{"non-canonical body", func() string {
			b := mustMarshal(t, tokenBodyOf(good))
			b = append([]byte{0xb8, b[0] & 0x1f}, b[1:]...)
			sig, err := sign(tr.relay.key, domainToken, b)
			if err != nil {
				t.Fatal(err)
			}
			return tokenText(t, b, sig)
		}()},
		{"body with trailing byte", func() string {
			b := append(mustMarshal(t, tokenBodyOf(good)), 0x00)
			sig, err := sign(tr.relay.key, domainToken, b)
			if err != nil {
				t.Fatal(err)
			}
			return tokenText(t, b, sig)
		}()},
		{"version 2", forge(func(b *tokenBody) { b.V = 2 })},
		{"role server", forge(func(b *tokenBody) { b.Role = string(RoleServer) })},
		{"no role", forge(func(b *tokenBody) { b.Role = "" })},
		{"organisation of 31 bytes", forge(func(b *tokenBody) { b.Org = b.Org[:31] })},
		{"nonce of 15 bytes", forge(func(b *tokenBody) { b.Nonce = b.Nonce[:15] })},
		{"no nonce", forge(func(b *tokenBody) { b.Nonce = nil })},
		{"no parent", forge(func(b *tokenBody) { b.Parent = nil })},
		{"33 addresses", forge(func(b *tokenBody) {
			for len(b.Addrs) < 33 {
				b.Addrs = append(b.Addrs, b.Addrs[0])
			}
		})},
		{"address that is not a multiaddr", forge(func(b *tokenBody) { b.Addrs = [][]byte{{0xff, 0xff, 0xff}} })},
		{"no issuer", forgeToken(t, body(func(b *tokenBody) { b.Issuer = nil }), tr.relay.key, domainToken)},
		{"issuer that is not a public key", forgeToken(t, body(func(b *tokenBody) { b.Issuer = []byte("relay") }), tr.relay.key, domainToken)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tok, err := ParseToken(tc.text); !errors.Is(err, ErrToken) {
				t.Errorf("got %+v, %v; want %v", tok, err, ErrToken)
			}
		})
	}
}

func TestTokenCheckFor(t *testing.T) {
	tr := newTree(t)
	o := tr.org
	sibling := o.child(t, tr.root, RoleRelay, "b", nil)
	other := newTestOrg(t)
	relayCerts, err := o.v.Verify(tr.relay.chain)
	if err != nil {
		t.Fatal(err)
	}
	orgRootID := idOf(t, o.rootKey)
	cases := []struct {
		name   string
		mod    func(*Token)
		by     crypto.PrivKey
		now    time.Time
		wantOK bool
	}{
		{"issuer is the parent itself", func(*Token) {}, tr.relay.key, testNow, true},
		{"issuer is the parent's parent", func(tok *Token) { tok.Issuer = tr.root.id }, tr.root.key, testNow, true},
		{"relay token from an ancestor", func(tok *Token) { tok.Issuer, tok.Role = tr.root.id, RoleRelay }, tr.root.key, testNow, true},
		{"valid until the second it expires", func(*Token) {}, tr.relay.key, testNow.Add(time.Hour), true},
		{"expired", func(*Token) {}, tr.relay.key, testNow.Add(time.Hour + time.Second), false},
		{"expired long ago", func(tok *Token) { tok.ExpiresAt = testNow.Add(-24 * time.Hour) }, tr.relay.key, testNow, false},
		{"wrong organisation", func(tok *Token) { tok.Org = other.v.Org }, tr.relay.key, testNow, false},
		{"no organisation", func(tok *Token) { tok.Org = Fingerprint{} }, tr.relay.key, testNow, false},
		{"for another parent", func(tok *Token) { tok.Parent = sibling.id }, tr.relay.key, testNow, false},
		{"for the parent's parent", func(tok *Token) { tok.Parent = tr.root.id }, tr.relay.key, testNow, false},
		{"issuer is a sibling relay", func(tok *Token) { tok.Issuer = sibling.id }, sibling.key, testNow, false},
		{"issuer is a child of the parent", func(tok *Token) { tok.Issuer = tr.client.id }, tr.client.key, testNow, false},
		{"issuer is the organisation root key", func(tok *Token) { tok.Issuer = orgRootID }, o.rootKey, testNow, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := Token{Org: o.v.Org, Parent: tr.relay.id, Role: RoleClient, Site: "a",
				ExpiresAt: testNow.Add(time.Hour), Nonce: NewNonce(), Issuer: tr.relay.id}
			tc.mod(&tok)
			parsed, err := ParseToken(mustSign(t, tok, tc.by))
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			err = parsed.CheckFor(relayCerts, tc.now)
			if tc.wantOK && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tc.wantOK && !errors.Is(err, ErrToken) {
				t.Errorf("got %v, want %v", err, ErrToken)
			}
		})
	}
}

func TestTokenSignRefuses(t *testing.T) {
	tr := newTree(t)
	base := Token{Org: tr.org.v.Org, Parent: tr.relay.id, Role: RoleClient, Site: "a",
		ExpiresAt: testNow.Add(time.Hour), Nonce: NewNonce(), Issuer: tr.relay.id}
	with := func(mod func(*Token)) Token { tok := base; mod(&tok); return tok }
	cases := []struct {
		name string
		tok  Token
	}{
		{"role server", with(func(tok *Token) { tok.Role = RoleServer })},
		{"no role", with(func(tok *Token) { tok.Role = "" })},
		{"unknown role", with(func(tok *Token) { tok.Role = "admin" })},
		{"empty site", with(func(tok *Token) { tok.Site = "" })},
		{"site too long", with(func(tok *Token) { tok.Site = strings.Repeat("s", MaxNameLen+1) })},
		{"empty group", with(func(tok *Token) { tok.Groups = []string{"pos", ""} })},
		{"group too long", with(func(tok *Token) { tok.Groups = []string{strings.Repeat("g", MaxNameLen+1)} })},
		{"too many groups", with(func(tok *Token) {
			for i := range MaxGroups + 1 {
				tok.Groups = append(tok.Groups, fmt.Sprintf("g%02d", i))
			}
		})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := tc.tok.Sign(tr.relay.key); err == nil {
				t.Errorf("signed %q", s)
			}
		})
	}
}

func TestNewNonce(t *testing.T) {
	a, b := NewNonce(), NewNonce()
	if len(a) != 16 || len(b) != 16 || bytes.Equal(a, b) {
		t.Errorf("nonces % x and % x", a, b)
	}
}
