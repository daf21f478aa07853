package admin

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
)

func TestCertifyAndVerify(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	relay := o.Child(t, root, cert.RoleRelay, "a")
	client := o.Child(t, relay, cert.RoleClient, "a")
	adminKey := certtest.NewKey(t)
	now := time.Now()
	mk := func(issuer certtest.Node, scope peer.ID) Cert {
		return Cert{Name: "alice", Key: adminKey.GetPublic(), Scope: scope, Issuer: issuer.ID, Org: o.V.Org,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour)}
	}
	cases := []struct {
		name      string
		issuer    certtest.Node
		c         Cert
		wantErr   error // from Certify
		verifyErr error
		at        time.Time
	}{
		{name: "root, whole tree", issuer: root, c: mk(root, root.ID)},
		{name: "root, a relay's subtree (certify on the relay)", issuer: root, c: mk(root, relay.ID), wantErr: ErrScope},
		{name: "relay, its own subtree", issuer: relay, c: mk(relay, relay.ID)},
		{name: "relay, the whole tree", issuer: relay, c: mk(relay, root.ID), wantErr: ErrScope},
		{name: "client cannot certify", issuer: client, c: mk(client, client.ID), wantErr: ErrScope},
		{name: "expired", issuer: root, c: mk(root, root.ID), at: now.Add(48 * time.Hour), verifyErr: cert.ErrExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Certify(tc.c, tc.issuer.Key, tc.issuer.Chain)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Certify: %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			at := tc.at
			if at.IsZero() {
				at = now
			}
			got, issuer, err := Verify(o.V, s, at)
			if !errors.Is(err, tc.verifyErr) {
				t.Fatalf("Verify: %v, want %v", err, tc.verifyErr)
			}
			if err != nil {
				return
			}
			if got.Name != "alice" || got.Scope != tc.c.Scope || !got.Key.Equals(adminKey.GetPublic()) || issuer[0].PeerID != tc.issuer.ID {
				t.Errorf("verified %+v issued by %s", got, issuer[0].PeerID)
			}
		})
	}
}

func TestVerifyRefusesForgeries(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	relay := o.Child(t, root, cert.RoleRelay, "a")
	now := time.Now()
	c := Cert{Name: "alice", Key: certtest.NewKey(t).GetPublic(), Scope: relay.ID, Issuer: relay.ID, Org: o.V.Org,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}
	good, err := Certify(c, relay.Key, relay.Chain)
	if err != nil {
		t.Fatal(err)
	}
	other := certtest.NewOrg(t)
	cases := []struct {
		name string
		s    func() Signed
		v    *cert.Verifier
		want error
	}{
		{"tampered body", func() Signed {
			s := good
			s.Body = append([]byte(nil), s.Body...)
			s.Body[len(s.Body)-1] ^= 1
			return s
		}, o.V, nil},
		{"signed by another key", func() Signed {
			s, _ := Certify(c, certtest.NewKey(t), relay.Chain)
			return s
		}, o.V, cert.ErrBadSignature},
		{"scope widened after signing", func() Signed {
			wide := c
			wide.Scope = root.ID
			s := good
			s.Body, _ = cert.Marshal(body{V: 1, Name: wide.Name, Key: mustRaw(t, wide), Scope: []byte(wide.Scope),
				Issuer: []byte(wide.Issuer), Org: wide.Org[:], NotBefore: wide.NotBefore.Unix(), NotAfter: wide.NotAfter.Unix()})
			return s
		}, o.V, ErrScope},
		{"another organisation", func() Signed { return good }, other.V, cert.ErrWrongOrg},
		{"issuer revoked", func() Signed { return good }, func() *cert.Verifier {
			v := *o.V
			v.Revoked = func(certs []cert.Cert) error {
				if certs[0].PeerID == relay.ID {
					return cert.ErrRevoked
				}
				return nil
			}
			return &v
		}(), cert.ErrRevoked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Verify(tc.v, tc.s(), now)
			if err == nil {
				t.Fatal("verified")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func mustRaw(t *testing.T, c Cert) []byte {
	raw, err := c.Key.Raw()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestIssuerRenewalKeepsAdmin: an admin certificate stays valid after its
// issuer's membership certificate (as embedded) has expired: the chain is
// checked as of the admin certificate's issue.
func TestIssuerChainCheckedAsOfIssue(t *testing.T) {
	o := certtest.NewOrg(t)
	issued := time.Now().Add(-40 * 24 * time.Hour)
	root := o.RootValid(t, issued.Add(-time.Minute), issued.Add(30*24*time.Hour)) // expired ten days ago
	c := Cert{Name: "alice", Key: certtest.NewKey(t).GetPublic(), Scope: root.ID, Issuer: root.ID, Org: o.V.Org,
		NotBefore: issued.Add(-cert.ClockSkew), NotAfter: issued.Add(365 * 24 * time.Hour)}
	s, err := Certify(c, root.Key, root.Chain)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Verify(o.V, s, time.Now()); err != nil {
		t.Errorf("admin certificate from an issuer since renewed: %v", err)
	}
}

func TestCovers(t *testing.T) {
	o := certtest.NewOrg(t)
	root := o.RootNode(t)
	ra := o.Child(t, root, cert.RoleRelay, "a")
	rb := o.Child(t, root, cert.RoleRelay, "b")
	a1 := o.Child(t, ra, cert.RoleClient, "a")
	for _, tc := range []struct {
		scope peer.ID
		node  certtest.Node
		want  bool
	}{
		{root.ID, a1, true}, {ra.ID, a1, true}, {a1.ID, a1, true}, {rb.ID, a1, false}, {ra.ID, root, false}, {rb.ID, rb, true},
	} {
		if got := Covers(tc.scope, o.Certs(t, tc.node)); got != tc.want {
			t.Errorf("scope %s covers %s = %v, want %v", tc.scope, tc.node.ID, got, tc.want)
		}
	}
}
