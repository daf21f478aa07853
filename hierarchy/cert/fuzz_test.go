package cert_test

import (
	"testing"
	"time"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
)

// seeds are valid encodings of every record, built with real keys.
func seeds(f *testing.F) (o certtest.Org, chain cert.Chain, token string, rev cert.Signed) {
	o = certtest.NewOrg(f)
	root := o.RootNode(f)
	relay := o.Child(f, root, cert.RoleRelay, "a")
	client := o.Child(f, relay, cert.RoleClient, "a", "tills")
	token, err := cert.Token{Org: o.V.Org, Parent: relay.ID, Addrs: nil, Role: cert.RoleClient, Site: "a",
		ExpiresAt: time.Now().Add(time.Hour), Nonce: cert.NewNonce(), Issuer: relay.ID}.Sign(relay.Key)
	if err != nil {
		f.Fatal(err)
	}
	rev, err = cert.SignRevocation(cert.Revocation{Target: client.ID, Revoker: relay.ID, At: time.Now(), Reason: "x"}, relay.Key)
	if err != nil {
		f.Fatal(err)
	}
	return o, client.Chain, token, rev
}

func FuzzDecode(f *testing.F) {
	_, chain, _, _ := seeds(f)
	for _, s := range chain {
		f.Add(s.Body)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xbf, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := cert.Decode(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid certificate: %v", err)
		}
	})
}

func FuzzDecodeChain(f *testing.F) {
	o, chain, _, _ := seeds(f)
	raw, err := cert.EncodeChain(chain)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte{0x80})
	f.Add([]byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // array claiming 2^64 items
	f.Fuzz(func(t *testing.T, data []byte) {
		ch, err := cert.DecodeChain(data)
		if err != nil {
			return
		}
		if len(ch) == 0 || len(ch) > cert.MaxChainLen {
			t.Fatalf("DecodeChain returned %d certificates", len(ch))
		}
		_, _ = o.V.Verify(ch)
	})
}

func FuzzParseToken(f *testing.F) {
	_, _, token, _ := seeds(f)
	f.Add(token)
	f.Add(cert.TokenPrefix)
	f.Add(cert.TokenPrefix + "oA")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := cert.ParseToken(s)
		if err != nil {
			return
		}
		if tok.Role != cert.RoleClient && tok.Role != cert.RoleRelay {
			t.Fatalf("ParseToken accepted role %q", tok.Role)
		}
	})
}

func FuzzOpenRevocation(f *testing.F) {
	_, _, _, rev := seeds(f)
	f.Add(rev.Body, rev.Sig)
	f.Add([]byte{0xa0}, []byte{})
	f.Fuzz(func(t *testing.T, body, sig []byte) {
		_, _ = cert.OpenRevocation(cert.Signed{Body: body, Sig: sig})
	})
}
