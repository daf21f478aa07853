package cert_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
)

func TestVerifyChains(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	relay := o.Child(t, root, cert.RoleRelay, "a")
	client := o.Child(t, relay, cert.RoleClient, "a", "tills", "pos")
	for _, n := range []certtest.Node{root, relay, client} {
		certs, err := o.V.Verify(n.Chain)
		if err != nil {
			t.Fatalf("chain of %d: %v", len(n.Chain), err)
		}
		if certs[0].PeerID != n.ID || len(certs) != len(n.Chain) || !certs[len(certs)-1].IsRoot() {
			t.Errorf("chain of %d: leaf %s, %d certs", len(n.Chain), certs[0].PeerID, len(certs))
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	relay := o.Child(t, root, cert.RoleRelay, "a")
	client := o.Child(t, relay, cert.RoleClient, "a")
	now := time.Now()
	issue := func(c cert.Cert, by certtest.Node) cert.Signed {
		s, err := cert.Issue(c, by.Key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	leafOf := func(n certtest.Node) cert.Cert { c, _ := n.Chain.Leaf(); return c }
	expiredLeaf := leafOf(client)
	expiredLeaf.NotBefore, expiredLeaf.NotAfter = now.Add(-3*time.Hour), now.Add(-2*time.Hour)
	futureLeaf := leafOf(client)
	futureLeaf.NotBefore, futureLeaf.NotAfter = now.Add(2*time.Hour), now.Add(3*time.Hour)
	expiredRelay := leafOf(relay)
	expiredRelay.NotBefore, expiredRelay.NotAfter = now.Add(-3*time.Hour), now.Add(-2*time.Hour)
	other := certtest.NewOrg(t)
	clientAsIssuer := o.Child(t, client, cert.RoleClient, "a") // a client issuing: link breaks role rule
	rootWithParent := leafOf(root)
	rootWithParent.Parent = relay.ID

	cases := []struct {
		name  string
		chain cert.Chain
		v     *cert.Verifier
		want  error
	}{
		{"another organisation's root", client.Chain, other.V, cert.ErrWrongOrg},
		{"expired leaf", append(cert.Chain{issue(expiredLeaf, relay)}, relay.Chain...), o.V, cert.ErrExpired},
		{"leaf not yet valid", append(cert.Chain{issue(futureLeaf, relay)}, relay.Chain...), o.V, cert.ErrExpired},
		{"expired intermediate", append(cert.Chain{client.Chain[0], issue(expiredRelay, root)}, root.Chain...), o.V, cert.ErrExpired},
		{"tampered body", func() cert.Chain {
			ch := append(cert.Chain(nil), client.Chain...)
			b := bytes.Clone(ch[0].Body)
			i := bytes.Index(b, []byte{0x61, 'a'}) // the text "a": the site
			b[i+1] = 'b'
			ch[0] = cert.Signed{Body: b, Sig: ch[0].Sig}
			return ch
		}(), o.V, cert.ErrBadSignature},
		{"signed by the wrong issuer", append(cert.Chain{issue(leafOf(client), root)}, relay.Chain...), o.V, cert.ErrBadSignature},
		{"broken link", append(cert.Chain{client.Chain[0]}, root.Chain...), o.V, cert.ErrBadChain},
		{"client as issuer", clientAsIssuer.Chain, o.V, cert.ErrBadChain},
		{"root certificate with a parent", cert.Chain{func() cert.Signed {
			s, err := cert.Issue(rootWithParent, o.Root)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}()}, o.V, cert.ErrBadChain},
		{"empty chain", nil, o.V, cert.ErrMalformed},
		{"chain too long", make(cert.Chain, cert.MaxChainLen+1), o.V, cert.ErrMalformed},
		{"non-canonical body", func() cert.Chain {
			ch := append(cert.Chain(nil), client.Chain...)
			// The same map, its head in a longer (non-shortest) form.
			ch[0] = cert.Signed{Body: append([]byte{0xb8, ch[0].Body[0] & 0x1f}, ch[0].Body[1:]...), Sig: ch[0].Sig}
			return ch
		}(), o.V, cert.ErrMalformed},
		{"revoked", client.Chain, func() *cert.Verifier {
			v := *o.V
			v.Revoked = func([]cert.Cert) error { return cert.ErrRevoked }
			return &v
		}(), cert.ErrRevoked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.v.Verify(tc.chain)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodingIsCanonical(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	key := certtest.NewKey(t)
	c := cert.Cert{PeerID: certtest.ID(t, key), Role: cert.RoleClient, Parent: root.ID, Site: "a",
		Groups: []string{"pos", "tills", "pos"}, Org: o.V.Org, NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(1800000000, 0)}
	a, err := cert.Issue(c, root.Key)
	if err != nil {
		t.Fatal(err)
	}
	c.Groups = []string{"tills", "pos"}
	b, err := cert.Issue(c, root.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Body, b.Body) {
		t.Error("the same certificate encoded two ways (groups must be sorted and deduplicated)")
	}
	got, err := cert.Decode(a.Body)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Groups, ",") != "pos,tills" || got.PeerID != c.PeerID || !got.NotAfter.Equal(c.NotAfter) {
		t.Errorf("decoded %+v", got)
	}
	ch := cert.Chain{a}
	raw, err := cert.EncodeChain(ch)
	if err != nil {
		t.Fatal(err)
	}
	back, err := cert.DecodeChain(raw)
	if err != nil || !bytes.Equal(back[0].Body, a.Body) {
		t.Errorf("chain round trip: %v", err)
	}
}

func TestTokens(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	relay := o.Child(t, root, cert.RoleRelay, "a")
	other := o.Child(t, root, cert.RoleRelay, "b")
	now := time.Now()
	tok := func(issuer certtest.Node, parent peer.ID, exp time.Time) string {
		s, err := cert.Token{Org: o.V.Org, Parent: parent, Role: cert.RoleClient, Site: "a", Groups: []string{"tills"},
			ExpiresAt: exp, Nonce: cert.NewNonce(), Issuer: issuer.ID}.Sign(issuer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	relayCerts := o.Certs(t, relay)
	cases := []struct {
		name string
		text string
		want error // from ParseToken or CheckFor; nil: accepted
	}{
		{"minted by the parent", tok(relay, relay.ID, now.Add(time.Hour)), nil},
		{"minted by an ancestor", tok(root, relay.ID, now.Add(time.Hour)), nil},
		{"minted by a non-ancestor", tok(other, relay.ID, now.Add(time.Hour)), cert.ErrToken},
		{"for another parent", tok(root, other.ID, now.Add(time.Hour)), cert.ErrToken},
		{"expired", tok(relay, relay.ID, now.Add(-time.Second)), cert.ErrToken},
		{"tampered", func() string {
			s := tok(relay, relay.ID, now.Add(time.Hour))
			return s[:len(s)-8] + "AAAAAAAA"
		}(), cert.ErrToken},
		{"wrong prefix", "join-" + tok(relay, relay.ID, now.Add(time.Hour)), cert.ErrToken},
		{"truncated", tok(relay, relay.ID, now.Add(time.Hour))[:40], cert.ErrToken},
		{"oversized", cert.TokenPrefix + strings.Repeat("A", cert.MaxTokenLen), cert.ErrToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parsed, err := cert.ParseToken(tc.text)
			if err == nil {
				err = parsed.CheckFor(relayCerts, now)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if err == nil && (parsed.Role != cert.RoleClient || parsed.Site != "a" || parsed.Groups[0] != "tills") {
				t.Errorf("parsed %+v", parsed)
			}
		})
	}
	// Sign refuses what no parent should redeem.
	for _, bad := range []cert.Token{
		{Org: o.V.Org, Parent: relay.ID, Role: cert.RoleServer, Site: "a", Nonce: cert.NewNonce(), Issuer: relay.ID},
		{Org: o.V.Org, Parent: relay.ID, Role: cert.RoleClient, Site: "", Nonce: cert.NewNonce(), Issuer: relay.ID},
	} {
		if _, err := bad.Sign(relay.Key); err == nil {
			t.Errorf("signed a token for role %q at site %q", bad.Role, bad.Site)
		}
	}
}

func TestRevocations(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	relay := o.Child(t, root, cert.RoleRelay, "a")
	client := o.Child(t, relay, cert.RoleClient, "a")
	stranger := o.Child(t, root, cert.RoleRelay, "b")
	chain := o.Certs(t, client)
	sign := func(target, revoker certtest.Node) cert.Revocation {
		s, err := cert.SignRevocation(cert.Revocation{Target: target.ID, Revoker: revoker.ID, At: time.Now(), Reason: "test"}, revoker.Key)
		if err != nil {
			t.Fatal(err)
		}
		r, err := cert.OpenRevocation(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := []struct {
		name            string
		target, revoker certtest.Node
		want            bool
	}{
		{"parent revokes child", client, relay, true},
		{"root revokes grandchild", client, root, true},
		{"root revokes relay: its subtree goes too", relay, root, true},
		{"node revokes itself", client, client, false},
		{"child revokes its parent", relay, client, false},
		{"a stranger revokes", client, stranger, false},
		{"target not in the chain", stranger, root, false},
	}
	for _, tc := range cases {
		if got := sign(tc.target, tc.revoker).AppliesTo(chain); got != tc.want {
			t.Errorf("%s: applies = %v, want %v", tc.name, got, tc.want)
		}
	}
	s, _ := cert.SignRevocation(cert.Revocation{Target: client.ID, Revoker: root.ID, At: time.Now()}, relay.Key)
	if _, err := cert.OpenRevocation(s); !errors.Is(err, cert.ErrBadSignature) {
		t.Errorf("revocation signed by someone else: %v", err)
	}
}
