package cert

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testNow is the fixed clock of every test verifier, so that results do
// not depend on when the tests run.
var testNow = time.Unix(1_750_000_000, 0).UTC()

// testOrg is an organisation with a real Ed25519 root key.
type testOrg struct {
	rootKey crypto.PrivKey
	v       *Verifier
}

// testNode is a member of a testOrg: its key, the certificate it was given
// (as passed to Issue) and its chain, leaf first.
type testNode struct {
	key   crypto.PrivKey
	id    peer.ID
	cert  Cert
	chain Chain
}

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func idOf(t testing.TB, k crypto.PrivKey) peer.ID {
	t.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newTestOrg(t testing.TB) testOrg {
	t.Helper()
	k := newKey(t)
	v, err := NewVerifier(k.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return testNow }
	return testOrg{rootKey: k, v: v}
}

func mustIssue(t testing.TB, c Cert, by crypto.PrivKey) Signed {
	t.Helper()
	s, err := Issue(c, by)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rootNode issues the root node's certificate with the organisation root
// key. mods change the certificate before it is signed.
func (o testOrg) rootNode(t testing.TB, role Role, mods ...func(*Cert)) testNode {
	t.Helper()
	key := newKey(t)
	c := Cert{PeerID: idOf(t, key), Role: role, Site: "hq", Org: o.v.Org,
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(24 * time.Hour), Serial: 1}
	for _, m := range mods {
		m(&c)
	}
	return testNode{key: key, id: c.PeerID, cert: c, chain: Chain{mustIssue(t, c, o.rootKey)}}
}

// child issues a certificate under parent, signed by the parent's key.
func (o testOrg) child(t testing.TB, parent testNode, role Role, site string, groups []string, mods ...func(*Cert)) testNode {
	t.Helper()
	key := newKey(t)
	c := Cert{PeerID: idOf(t, key), Role: role, Parent: parent.id, Site: site, Groups: groups, Org: o.v.Org,
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(24 * time.Hour), Serial: 2}
	for _, m := range mods {
		m(&c)
	}
	return testNode{key: key, id: c.PeerID, cert: c, chain: append(Chain{mustIssue(t, c, parent.key)}, parent.chain...)}
}

// tree is the usual test hierarchy: org root key → root node (server) →
// relay → client.
type tree struct {
	org                 testOrg
	root, relay, client testNode
}

func newTree(t testing.TB) tree {
	t.Helper()
	o := newTestOrg(t)
	root := o.rootNode(t, RoleServer)
	relay := o.child(t, root, RoleRelay, "a", nil)
	client := o.child(t, relay, RoleClient, "a", []string{"tills", "pos"})
	return tree{org: o, root: root, relay: relay, client: client}
}

// normalized is c as Decode returns it: whole seconds, UTC, groups sorted
// and deduplicated.
func normalized(c Cert) Cert {
	c.NotBefore = time.Unix(c.NotBefore.Unix(), 0).UTC()
	c.NotAfter = time.Unix(c.NotAfter.Unix(), 0).UTC()
	if c.Groups != nil {
		c.Groups = slices.Compact(slices.Sorted(slices.Values(c.Groups)))
	}
	return c
}

// certsOf is what Verify should return for the nodes, leaf first.
func certsOf(nodes ...testNode) []Cert {
	var out []Cert
	for _, n := range nodes {
		out = append(out, normalized(n.cert))
	}
	return out
}

func TestVerifyValidChains(t *testing.T) {
	tr := newTree(t)
	o := tr.org
	dept := o.rootNode(t, RoleRelay) // a department server: a relay without parent
	deptClient := o.child(t, dept, RoleClient, "b", nil)
	// The deepest chain allowed: a root and MaxChainLen-1 relays below it.
	deep := o.rootNode(t, RoleServer)
	var deepPath []testNode
	for range MaxChainLen - 1 {
		deepPath = append([]testNode{deep}, deepPath...)
		deep = o.child(t, deep, RoleRelay, "d", nil)
	}
	deepPath = append([]testNode{deep}, deepPath...)

	cases := []struct {
		name  string
		chain Chain
		want  []Cert
	}{
		{"1 level: root node", tr.root.chain, certsOf(tr.root)},
		{"2 levels: relay", tr.relay.chain, certsOf(tr.relay, tr.root)},
		{"3 levels: client", tr.client.chain, certsOf(tr.client, tr.relay, tr.root)},
		{"department server as root", dept.chain, certsOf(dept)},
		{"client of a department server", deptClient.chain, certsOf(deptClient, dept)},
		{fmt.Sprintf("%d levels", MaxChainLen), deep.chain, certsOf(deepPath...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := o.v.Verify(tc.chain)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("certificates (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	tr := newTree(t)
	o, root, relay, client := tr.org, tr.root, tr.relay, tr.client
	other := newTestOrg(t)
	otherRoot := other.rootNode(t, RoleServer)

	// reissue signs a changed copy of n's certificate with key and puts it in
	// front of rest.
	reissue := func(n testNode, key crypto.PrivKey, rest Chain, mod func(*Cert)) Chain {
		c := n.cert
		mod(&c)
		return append(Chain{mustIssue(t, c, key)}, rest...)
	}
	setValidity := func(nb, na time.Duration) func(*Cert) {
		return func(c *Cert) { c.NotBefore, c.NotAfter = testNow.Add(nb), testNow.Add(na) }
	}
	noop := func(*Cert) {}
	// signRaw signs body bytes exactly as given.
	signRaw := func(key crypto.PrivKey, domain string, body []byte) Signed {
		sig, err := sign(key, domain, body)
		if err != nil {
			t.Fatal(err)
		}
		return Signed{Body: body, Sig: sig}
	}
	withVerifier := func(mod func(*Verifier)) *Verifier {
		v := *o.v
		mod(&v)
		return &v
	}
	errHook := errors.New("hook says no")
	// A relay-shaped certificate below the client: the client acts as issuer.
	underClient := o.child(t, client, RoleRelay, "a", nil)
	clientUnderClient := o.child(t, client, RoleClient, "a", nil)
	// A root certificate that names a parent.
	rootWithParent := reissue(root, o.rootKey, nil, func(c *Cert) { c.Parent = relay.id })
	// A client as the root node.
	clientRoot := o.rootNode(t, RoleClient)
	// A chain from the other organisation, then one that claims our
	// organisation's fingerprint but is signed by the other root key.
	claimsOurOrg := other.rootNode(t, RoleServer, func(c *Cert) { c.Org = o.v.Org })
	// A client of the other organisation under our relay.
	foreignLeaf := reissue(client, relay.key, relay.chain, func(c *Cert) { c.Org = other.v.Org })
	// Build a chain of MaxChainLen+1 real certificates.
	tooDeep := o.rootNode(t, RoleServer)
	for range MaxChainLen {
		tooDeep = o.child(t, tooDeep, RoleRelay, "d", nil)
	}

	cases := []struct {
		name  string
		chain Chain
		v     *Verifier
		want  error
	}{
		// Organisation.
		{"verifier of another organisation", client.chain, other.v, ErrWrongOrg},
		{"another organisation's chain", otherRoot.chain, o.v, ErrWrongOrg},
		{"leaf of another organisation", foreignLeaf, o.v, ErrWrongOrg},
		{"our fingerprint, signed by another root key", claimsOurOrg.chain, o.v, ErrBadSignature},

		// Validity.
		{"expired leaf", reissue(client, relay.key, relay.chain, setValidity(-3*time.Hour, -2*time.Hour)), o.v, ErrExpired},
		{"leaf not yet valid", reissue(client, relay.key, relay.chain, setValidity(2*time.Hour, 3*time.Hour)), o.v, ErrExpired},
		{"expired intermediate", append(Chain{client.chain[0]}, reissue(relay, root.key, root.chain, setValidity(-3*time.Hour, -2*time.Hour))...), o.v, ErrExpired},
		{"intermediate not yet valid", append(Chain{client.chain[0]}, reissue(relay, root.key, root.chain, setValidity(2*time.Hour, 3*time.Hour))...), o.v, ErrExpired},
		{"expired root", append(client.chain[:2:2], reissue(root, o.rootKey, nil, setValidity(-3*time.Hour, -2*time.Hour))...), o.v, ErrExpired},
		{"verifier clock past expiry", client.chain, withVerifier(func(v *Verifier) {
			v.Now = func() time.Time { return testNow.Add(48 * time.Hour) }
		}), ErrExpired},

		// Signatures.
		{"tampered body: site", func() Chain {
			ch := slices.Clone(client.chain)
			b := bytes.Clone(ch[0].Body)
			i := bytes.Index(b, []byte{0x04, 0x61, 'a'}) // key 4 (site), text "a"
			if i < 0 {
				t.Fatal("site not found in body")
			}
			b[i+2] = 'b'
			ch[0] = Signed{Body: b, Sig: ch[0].Sig}
			return ch
		}(), o.v, ErrBadSignature},
		{"tampered body: version", func() Chain {
			ch := slices.Clone(client.chain)
			b := bytes.Clone(ch[0].Body)
			if !bytes.HasPrefix(b[1:], []byte{0x00, 0x01}) {
				t.Fatalf("body starts % x", b[:3])
			}
			b[2] = 0x02
			ch[0] = Signed{Body: b, Sig: ch[0].Sig}
			return ch
		}(), o.v, ErrMalformed},
		{"tampered signature", func() Chain {
			ch := slices.Clone(client.chain)
			sig := bytes.Clone(ch[0].Sig)
			sig[10] ^= 0x40
			ch[0] = Signed{Body: ch[0].Body, Sig: sig}
			return ch
		}(), o.v, ErrBadSignature},
		{"truncated signature", append(Chain{{Body: client.chain[0].Body, Sig: client.chain[0].Sig[:63]}}, relay.chain...), o.v, ErrBadSignature},
		{"no signature", append(Chain{{Body: client.chain[0].Body}}, relay.chain...), o.v, ErrBadSignature},
		{"leaf signed by its grandparent", reissue(client, root.key, relay.chain, noop), o.v, ErrBadSignature},
		{"leaf signed by itself", reissue(client, client.key, relay.chain, noop), o.v, ErrBadSignature},
		{"relay signed by the org root key", append(Chain{client.chain[0]}, reissue(relay, o.rootKey, root.chain, noop)...), o.v, ErrBadSignature},
		{"root signed by its own node key", append(client.chain[:2:2], reissue(root, root.key, nil, noop)...), o.v, ErrBadSignature},
		{"root signed by the org root key as a token", Chain{signRaw(o.rootKey, domainToken, root.chain[0].Body)}, o.v, ErrBadSignature},
		{"leaf signed by its parent as a revocation", append(Chain{signRaw(relay.key, domainRevocation, client.chain[0].Body)}, relay.chain...), o.v, ErrBadSignature},

		// Links and roles.
		{"broken link: parent skipped", append(Chain{client.chain[0]}, root.chain...), o.v, ErrBadChain},
		{"broken link: parent from another branch", append(Chain{client.chain[0]}, o.child(t, root, RoleRelay, "a", nil).chain...), o.v, ErrBadChain},
		{"broken link: chain cut before the root", client.chain[:2], o.v, ErrBadChain},
		{"leaf alone", client.chain[:1], o.v, ErrBadChain},
		{"chain in the wrong order", Chain{root.chain[0], relay.chain[0], client.chain[0]}, o.v, ErrBadChain},
		{"client as issuer of a relay", underClient.chain, o.v, ErrBadChain},
		{"client as issuer of a client", clientUnderClient.chain, o.v, ErrBadChain},
		{"root certificate with a parent", rootWithParent, o.v, ErrBadChain},
		{"client as root node", clientRoot.chain, o.v, ErrBadChain},

		// Shape.
		{"nil chain", nil, o.v, ErrMalformed},
		{"empty chain", Chain{}, o.v, ErrMalformed},
		{"empty certificate", Chain{{}}, o.v, ErrMalformed},
		{"chain of MaxChainLen+1 empty certificates", make(Chain, MaxChainLen+1), o.v, ErrMalformed},
		{"chain of MaxChainLen+1 real certificates", tooDeep.chain, o.v, ErrMalformed},
		{"body over MaxBodyBytes", Chain{signRaw(o.rootKey, domainCert, make([]byte, MaxBodyBytes+1))}, o.v, ErrMalformed},

		// Revocation hook.
		{"Revoked hook refuses", client.chain, withVerifier(func(v *Verifier) {
			v.Revoked = func([]Cert) error { return errHook }
		}), errHook},
		{"Revoked hook returns ErrRevoked", client.chain, withVerifier(func(v *Verifier) {
			v.Revoked = func([]Cert) error { return fmt.Errorf("relay: %w", ErrRevoked) }
		}), ErrRevoked},
	}
	sentinels := []error{ErrMalformed, ErrBadSignature, ErrExpired, ErrWrongOrg, ErrBadChain, ErrRevoked, errHook}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := tc.v.Verify(tc.chain)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if certs != nil {
				t.Errorf("returned %d certificates with an error", len(certs))
			}
			for _, s := range sentinels {
				if s != tc.want && errors.Is(err, s) {
					t.Errorf("error %q also matches %v", err, s)
				}
			}
		})
	}
}

// TestVerifyRefusesEveryByteFlip flips each byte of each body and signature
// of a valid chain: every change is refused, with one of the sentinels.
func TestVerifyRefusesEveryByteFlip(t *testing.T) {
	tr := newTree(t)
	for i := range tr.client.chain {
		for _, part := range []string{"body", "sig"} {
			var n int
			if part == "body" {
				n = len(tr.client.chain[i].Body)
			} else {
				n = len(tr.client.chain[i].Sig)
			}
			for j := range n {
				for _, mask := range []byte{0x01, 0x80} {
					ch := slices.Clone(tr.client.chain)
					s := Signed{Body: bytes.Clone(ch[i].Body), Sig: bytes.Clone(ch[i].Sig)}
					if part == "body" {
						s.Body[j] ^= mask
					} else {
						s.Sig[j] ^= mask
					}
					ch[i] = s
					_, err := tr.org.v.Verify(ch)
					if err == nil {
						t.Fatalf("cert %d: %s byte %d ^ %#x accepted", i, part, j, mask)
					}
					if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrWrongOrg) &&
						!errors.Is(err, ErrExpired) && !errors.Is(err, ErrBadChain) {
						t.Fatalf("cert %d: %s byte %d ^ %#x: error without a sentinel: %v", i, part, j, mask, err)
					}
				}
			}
		}
	}
}

func TestVerifyClockSkew(t *testing.T) {
	tr := newTree(t)
	c := tr.client.cert
	cases := []struct {
		name string
		now  time.Time
		want error
	}{
		{"inside the period", testNow, nil},
		{"at not-before", c.NotBefore, nil},
		{"skew before not-before", c.NotBefore.Add(-ClockSkew), nil},
		{"beyond skew before not-before", c.NotBefore.Add(-ClockSkew - time.Second), ErrExpired},
		{"at not-after", c.NotAfter, nil},
		{"skew after not-after", c.NotAfter.Add(ClockSkew), nil},
		{"beyond skew after not-after", c.NotAfter.Add(ClockSkew + time.Second), ErrExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := *tr.org.v
			v.Now = func() time.Time { return tc.now }
			_, err := v.Verify(tr.client.chain)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRevokedHook(t *testing.T) {
	tr := newTree(t)
	o := tr.org
	stranger := o.child(t, tr.root, RoleRelay, "b", nil)
	revoke := func(target, revoker testNode) Revocation {
		s, err := SignRevocation(Revocation{Target: target.id, Revoker: revoker.id, At: testNow}, revoker.key)
		if err != nil {
			t.Fatal(err)
		}
		r, err := OpenRevocation(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := []struct {
		name  string
		revs  []Revocation
		chain Chain
		want  error
	}{
		{"no revocations", nil, tr.client.chain, nil},
		{"client revoked by its relay", []Revocation{revoke(tr.client, tr.relay)}, tr.client.chain, ErrRevoked},
		{"relay revoked: its client goes too", []Revocation{revoke(tr.relay, tr.root)}, tr.client.chain, ErrRevoked},
		{"relay revoked: its parent stays", []Revocation{revoke(tr.relay, tr.root)}, tr.root.chain, nil},
		{"revocation by a stranger ignored", []Revocation{revoke(tr.client, stranger)}, tr.client.chain, nil},
		{"self-revocation ignored", []Revocation{revoke(tr.client, tr.client)}, tr.client.chain, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen []Cert
			v := *o.v
			v.Revoked = func(certs []Cert) error {
				seen = certs
				for _, r := range tc.revs {
					if r.AppliesTo(certs) {
						return fmt.Errorf("%s: %w", r.Target, ErrRevoked)
					}
				}
				return nil
			}
			certs, err := v.Verify(tc.chain)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err == nil {
				if diff := cmp.Diff(seen, certs); diff != "" {
					t.Errorf("hook saw other certificates than Verify returned (-hook +verify):\n%s", diff)
				}
			}
			if len(seen) != len(tc.chain) {
				t.Errorf("hook saw %d certificates, chain has %d", len(seen), len(tc.chain))
			}
		})
	}
	// The hook is not asked about chains that fail verification.
	v := *o.v
	called := false
	v.Revoked = func([]Cert) error { called = true; return nil }
	if _, err := v.Verify(tr.client.chain[:2]); err == nil || called {
		t.Errorf("broken chain: err %v, hook called %v", err, called)
	}
}

// entry is one key/value pair of a CBOR map, both as encoded.
type entry struct {
	key   uint64
	value []byte
}

// splitMap decodes a canonical CBOR map with small integer keys into its
// entries, in key order.
func splitMap(t testing.TB, data []byte) []entry {
	t.Helper()
	var m map[uint64]cbor.RawMessage
	if err := Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	var out []entry
	for _, k := range slices.Sorted(func(yield func(uint64) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		if k >= 24 {
			t.Fatalf("key %d is not small", k)
		}
		out = append(out, entry{k, m[k]})
	}
	return out
}

// joinMap encodes entries as a CBOR map behind the given head.
func joinMap(head []byte, es []entry) []byte {
	out := slices.Clone(head)
	for _, e := range es {
		out = append(out, byte(e.key))
		out = append(out, e.value...)
	}
	return out
}

func shortHead(n int) []byte { return []byte{0xa0 | byte(n)} }

// replace returns es with the value of key k replaced (or added, in order).
func replace(es []entry, k uint64, value []byte) []entry {
	out := slices.Clone(es)
	for i, e := range out {
		if e.key == k {
			out[i].value = value
			return out
		}
		if e.key > k {
			return slices.Insert(out, i, entry{k, value})
		}
	}
	return append(out, entry{k, value})
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRefusesNonCanonical(t *testing.T) {
	tr := newTree(t)
	leaf := tr.client.chain[0].Body // has groups "pos", "tills"
	rootBody := tr.root.chain[0].Body
	es := splitMap(t, leaf)
	rootEs := splitMap(t, rootBody)
	if len(es) != 10 || len(rootEs) != 8 {
		t.Fatalf("leaf has %d fields, root %d", len(es), len(rootEs))
	}
	valueOf := func(es []entry, k uint64) []byte {
		for _, e := range es {
			if e.key == k {
				return e.value
			}
		}
		t.Fatalf("no key %d", k)
		return nil
	}
	longer := func(v []byte) []byte {
		// The same byte or text string with its length one size too long.
		major, n := v[0]&0xe0, v[0]&0x1f
		switch {
		case n < 24:
			return append([]byte{major | 24, n}, v[1:]...)
		case n == 24:
			return append([]byte{major | 25, 0, v[1]}, v[2:]...)
		}
		t.Fatalf("unexpected head % x", v[:2])
		return nil
	}
	peerID := valueOf(es, 1)
	site := valueOf(es, 4)

	cases := []struct {
		name string
		body []byte
		root bool // a root body, signed by the org root key
	}{
		{"map head in long form", joinMap([]byte{0xb8, byte(len(es))}, es), false},
		{"map head in longer form", joinMap([]byte{0xb9, 0, byte(len(es))}, es), false},
		{"indefinite-length map", append(joinMap([]byte{0xbf}, es), 0xff), false},
		{"key in long form", func() []byte {
			b := joinMap(shortHead(len(es)), es)
			return append([]byte{b[0], 0x18, 0x00}, b[2:]...)
		}(), false},
		{"version in long form", joinMap(shortHead(len(es)), replace(es, 0, []byte{0x18, 0x01})), false},
		{"serial in long form", joinMap(shortHead(len(es)), replace(es, 9, []byte{0x19, 0x00, 0x02})), false},
		{"not-before in longer form", joinMap(shortHead(len(es)), replace(es, 7, append([]byte{0x1b, 0, 0, 0, 0}, valueOf(es, 7)[1:]...))), false},
		{"not-before as a float", joinMap(shortHead(len(es)), replace(es, 7, mustMarshal(t, float64(tr.client.cert.NotBefore.Unix())))), false},
		{"not-before as an epoch tag", joinMap(shortHead(len(es)), replace(es, 7, append([]byte{0xc1}, valueOf(es, 7)...))), false},
		{"peer id length in long form", joinMap(shortHead(len(es)), replace(es, 1, longer(peerID))), false},
		{"peer id as an indefinite-length byte string", joinMap(shortHead(len(es)), replace(es, 1, append(append([]byte{0x5f}, peerID...), 0xff))), false},
		{"site length in long form", joinMap(shortHead(len(es)), replace(es, 4, longer(site))), false},
		{"site as an indefinite-length text", joinMap(shortHead(len(es)), replace(es, 4, append(append([]byte{0x7f}, site...), 0xff))), false},
		{"keys out of order", func() []byte {
			e := slices.Clone(es)
			e[3], e[4] = e[4], e[3]
			return joinMap(shortHead(len(e)), e)
		}(), false},
		{"duplicate key", joinMap(shortHead(len(es)+1), append(slices.Clone(es), es[4])), false},
		{"unknown key", joinMap(shortHead(len(es)+1), append(slices.Clone(es), entry{10, []byte{0x00}})), false},
		{"trailing byte", append(slices.Clone(leaf), 0x00), false},
		{"trailing map", append(slices.Clone(leaf), 0xa0), false},
		{"groups unsorted", joinMap(shortHead(len(es)), replace(es, 5, mustMarshal(t, []string{"tills", "pos"}))), false},
		{"groups duplicated", joinMap(shortHead(len(es)), replace(es, 5, mustMarshal(t, []string{"pos", "pos", "tills"}))), false},
		{"groups as an indefinite-length array", joinMap(shortHead(len(es)), replace(es, 5, append(append([]byte{0x9f}, valueOf(es, 5)[1:]...), 0xff))), false},
		{"empty groups present", joinMap(shortHead(len(rootEs)+1), replace(rootEs, 5, []byte{0x80})), true},
		{"empty parent present", joinMap(shortHead(len(rootEs)+1), replace(rootEs, 3, []byte{0x40})), true},
		{"null parent", joinMap(shortHead(len(rootEs)+1), replace(rootEs, 3, []byte{0xf6})), true},
		// Canonical, but not a valid certificate.
		{"version 2", joinMap(shortHead(len(es)), replace(es, 0, []byte{0x02})), false},
		{"version 0", joinMap(shortHead(len(es)), replace(es, 0, []byte{0x00})), false},
		{"organisation of 31 bytes", joinMap(shortHead(len(es)), replace(es, 6, mustMarshal(t, tr.org.v.Org[:31]))), false},
		{"no organisation", joinMap(shortHead(len(es)-1), slices.DeleteFunc(slices.Clone(es), func(e entry) bool { return e.key == 6 })), false},
		{"no peer id", joinMap(shortHead(len(es)-1), slices.DeleteFunc(slices.Clone(es), func(e entry) bool { return e.key == 1 })), false},
		{"unknown role", joinMap(shortHead(len(es)), replace(es, 2, mustMarshal(t, "admin"))), false},
		{"empty site", joinMap(shortHead(len(es)), replace(es, 4, mustMarshal(t, ""))), false},
		{"site too long", joinMap(shortHead(len(es)), replace(es, 4, mustMarshal(t, strings.Repeat("s", MaxNameLen+1)))), false},
		{"empty group", joinMap(shortHead(len(es)), replace(es, 5, mustMarshal(t, []string{""}))), false},
		{"too many groups", joinMap(shortHead(len(es)), replace(es, 5, mustMarshal(t, func() []string {
			var g []string
			for i := range MaxGroups + 1 {
				g = append(g, fmt.Sprintf("g%02d", i))
			}
			return g
		}()))), false},
		{"own parent", joinMap(shortHead(len(es)), replace(es, 3, peerID)), false},
		{"not-after before not-before", joinMap(shortHead(len(es)), replace(es, 8, valueOf(es, 7))), false},
		{"invalid UTF-8 site", joinMap(shortHead(len(es)), replace(es, 4, []byte{0x61, 0xff})), false},
		{"site as a byte string", joinMap(shortHead(len(es)), replace(es, 4, append([]byte{0x41}, site[1:]...))), false},
		{"array instead of map", mustMarshal(t, []any{1, 2}), false},
		{"empty map", []byte{0xa0}, false},
		{"empty input", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.body); !errors.Is(err, ErrMalformed) {
				t.Errorf("Decode: got %v, want %v", err, ErrMalformed)
			}
			// Signed by the right issuer, the chain is still refused for
			// its encoding.
			var ch Chain
			if tc.root {
				ch = Chain{signedBy(t, tr.org.rootKey, tc.body)}
			} else {
				ch = append(Chain{signedBy(t, tr.relay.key, tc.body)}, tr.relay.chain...)
			}
			if _, err := tr.org.v.Verify(ch); !errors.Is(err, ErrMalformed) {
				t.Errorf("Verify: got %v, want %v", err, ErrMalformed)
			}
		})
	}
	// The untouched entries reassemble to the original: the cases above
	// differ from a valid body only where they say.
	if got := joinMap(shortHead(len(es)), es); !bytes.Equal(got, leaf) {
		t.Fatalf("reassembled body differs:\n% x\n% x", got, leaf)
	}
}

// signedBy signs a certificate body exactly as given.
func signedBy(t testing.TB, key crypto.PrivKey, body []byte) Signed {
	t.Helper()
	sig, err := sign(key, domainCert, body)
	if err != nil {
		t.Fatal(err)
	}
	return Signed{Body: body, Sig: sig}
}

func TestEncodeRoundTrip(t *testing.T) {
	o := newTestOrg(t)
	a, b := idOf(t, newKey(t)), idOf(t, newKey(t))
	base := Cert{PeerID: a, Role: RoleClient, Parent: b, Site: "a", Org: o.v.Org,
		NotBefore: time.Unix(1_700_000_000, 0), NotAfter: time.Unix(1_800_000_000, 0), Serial: 7}
	with := func(mod func(*Cert)) Cert { c := base; mod(&c); return c }
	cases := []struct {
		name string
		c    Cert
		same Cert // another Cert that must encode to the same bytes
	}{
		{"client", base, base},
		{"root node", with(func(c *Cert) { c.Parent, c.Role = "", RoleServer }), with(func(c *Cert) { c.Parent, c.Role = "", RoleServer })},
		{"groups sorted", with(func(c *Cert) { c.Groups = []string{"tills", "pos", "b"} }), with(func(c *Cert) { c.Groups = []string{"b", "pos", "tills"} })},
		{"groups deduplicated", with(func(c *Cert) { c.Groups = []string{"pos", "tills", "pos"} }), with(func(c *Cert) { c.Groups = []string{"tills", "pos"} })},
		{"empty groups as none", with(func(c *Cert) { c.Groups = []string{} }), base},
		{"sub-second times truncated", with(func(c *Cert) { c.NotBefore = c.NotBefore.Add(999 * time.Millisecond) }), base},
		{"time zone ignored", with(func(c *Cert) { c.NotAfter = c.NotAfter.In(time.FixedZone("x", 3600)) }), base},
		{"largest serial", with(func(c *Cert) { c.Serial = 1<<64 - 1 }), with(func(c *Cert) { c.Serial = 1<<64 - 1 })},
		{"negative not-before", with(func(c *Cert) { c.NotBefore = time.Unix(-1, 0) }), with(func(c *Cert) { c.NotBefore = time.Unix(-1, 0) })},
		{"longest names", with(func(c *Cert) {
			c.Site = strings.Repeat("s", MaxNameLen)
			c.Groups = []string{strings.Repeat("g", MaxNameLen)}
		}), with(func(c *Cert) {
			c.Site = strings.Repeat("s", MaxNameLen)
			c.Groups = []string{strings.Repeat("g", MaxNameLen)}
		})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first, err := tc.c.encode()
			if err != nil {
				t.Fatal(err)
			}
			second, err := tc.c.encode()
			if err != nil {
				t.Fatal(err)
			}
			same, err := tc.same.encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, second) || !bytes.Equal(first, same) {
				t.Fatalf("encodings differ:\n% x\n% x\n% x", first, second, same)
			}
			got, err := Decode(first)
			if err != nil {
				t.Fatal(err)
			}
			want := normalized(tc.c)
			if len(want.Groups) == 0 {
				want.Groups = nil
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
			again, err := got.encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, first) {
				t.Errorf("decode→encode changed the bytes:\n% x\n% x", first, again)
			}
			// Issue signs exactly these bytes.
			s := mustIssue(t, tc.c, o.rootKey)
			if !bytes.Equal(s.Body, first) {
				t.Error("Issue encoded differently")
			}
		})
	}
}

func TestIssueRefusesInvalid(t *testing.T) {
	o := newTestOrg(t)
	a, b := idOf(t, newKey(t)), idOf(t, newKey(t))
	base := Cert{PeerID: a, Role: RoleClient, Parent: b, Site: "a", Org: o.v.Org, NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}
	with := func(mod func(*Cert)) Cert { c := base; mod(&c); return c }
	cases := []struct {
		name string
		c    Cert
	}{
		{"no role", with(func(c *Cert) { c.Role = "" })},
		{"unknown role", with(func(c *Cert) { c.Role = "admin" })},
		{"no peer id", with(func(c *Cert) { c.PeerID = "" })},
		{"own parent", with(func(c *Cert) { c.Parent = c.PeerID })},
		{"no site", with(func(c *Cert) { c.Site = "" })},
		{"site too long", with(func(c *Cert) { c.Site = strings.Repeat("s", MaxNameLen+1) })},
		{"empty group", with(func(c *Cert) { c.Groups = []string{"a", ""} })},
		{"group too long", with(func(c *Cert) { c.Groups = []string{strings.Repeat("g", MaxNameLen+1)} })},
		{"too many groups", with(func(c *Cert) {
			for i := range MaxGroups + 1 {
				c.Groups = append(c.Groups, fmt.Sprintf("g%02d", i))
			}
		})},
		{"not-after equals not-before", with(func(c *Cert) { c.NotAfter = c.NotBefore })},
		{"not-after before not-before", with(func(c *Cert) { c.NotAfter = c.NotBefore.Add(-time.Second) })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := Issue(tc.c, o.rootKey); err == nil {
				t.Errorf("issued % x", s.Body)
			}
		})
	}
}

func TestChainEncoding(t *testing.T) {
	tr := newTree(t)
	cases := []struct {
		name  string
		chain Chain
	}{
		{"1 level", tr.root.chain},
		{"2 levels", tr.relay.chain},
		{"3 levels", tr.client.chain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := EncodeChain(tc.chain)
			if err != nil {
				t.Fatal(err)
			}
			again, err := EncodeChain(tc.chain)
			if err != nil || !bytes.Equal(raw, again) {
				t.Fatalf("two encodings differ (%v)", err)
			}
			back, err := DecodeChain(raw)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.chain, back); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if _, err := tr.org.v.Verify(back); err != nil {
				t.Errorf("decoded chain does not verify: %v", err)
			}
			leaf, err := back.Leaf()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := Decode(tc.chain[0].Body)
			if diff := cmp.Diff(want, leaf); diff != "" {
				t.Errorf("Leaf (-want +got):\n%s", diff)
			}
		})
	}

	// NotAfter is the earliest expiry of the chain.
	early := tr.org.child(t, tr.relay, RoleClient, "a", nil, func(c *Cert) { c.NotAfter = testNow.Add(time.Hour) })
	if na, err := early.chain.NotAfter(); err != nil || !na.Equal(testNow.Add(time.Hour)) {
		t.Errorf("NotAfter of a short leaf = %v, %v", na, err)
	}
	lateLeaf := tr.org.child(t, tr.relay, RoleClient, "a", nil, func(c *Cert) { c.NotAfter = testNow.Add(100 * time.Hour) })
	if na, err := lateLeaf.chain.NotAfter(); err != nil || !na.Equal(tr.relay.cert.NotAfter) {
		t.Errorf("NotAfter of a long leaf = %v, %v", na, err)
	}
	if _, err := (Chain{}).Leaf(); !errors.Is(err, ErrMalformed) {
		t.Errorf("Leaf of an empty chain: %v", err)
	}

	long := make(Chain, MaxChainLen+1)
	for i := range long {
		long[i] = tr.root.chain[0]
	}
	refusals := []struct {
		name string
		data []byte
	}{
		{"empty input", nil},
		{"not CBOR", []byte("chain")},
		{"empty array", []byte{0x80}},
		{"map instead of array", []byte{0xa0}},
		{"null", []byte{0xf6}},
		{"array claiming 2^64 items", []byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"indefinite-length array", append(append([]byte{0x9f}, mustMarshal(t, tr.root.chain[0])...), 0xff)},
		{"too many certificates", mustMarshal(t, long)},
		{"too many bytes", make([]byte, MaxChainLen*(MaxBodyBytes+128)+1)},
		{"certificate with an unknown field", []byte{0x81, 0xa1, 0x02, 0x40}},
		{"trailing byte", append(mustMarshal(t, tr.client.chain), 0x00)},
		{"truncated", mustMarshal(t, tr.client.chain)[:50]},
	}
	for _, tc := range refusals {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			if ch, err := DecodeChain(tc.data); !errors.Is(err, ErrMalformed) {
				t.Errorf("got %d certificates, %v; want %v", len(ch), err, ErrMalformed)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	cases := []struct {
		in       string
		want     Role
		ok       bool
		canIssue bool
	}{
		{"server", RoleServer, true, true},
		{"relay", RoleRelay, true, true},
		{"client", RoleClient, true, false},
		{"", "", false, false},
		{"Server", "", false, false},
		{"admin", "", false, false},
	}
	for _, tc := range cases {
		got, err := ParseRole(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRole(%q) = %q, %v", tc.in, got, err)
		}
		if Role(tc.in).CanIssue() != tc.canIssue {
			t.Errorf("Role(%q).CanIssue() = %v", tc.in, !tc.canIssue)
		}
	}
}

// TestVerifyRefusesLoop: a chain in which a peer appears twice (here the
// root node, re-issued by its own relay as that relay's child) is a loop,
// not a lineage, and is refused.
func TestVerifyRefusesLoop(t *testing.T) {
	o := newTestOrg(t)
	root := o.rootNode(t, RoleServer)
	relay := o.child(t, root, RoleRelay, "a", nil)
	c := Cert{PeerID: root.id, Role: RoleRelay, Parent: relay.id, Site: "a", Org: o.v.Org,
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	loop := append(Chain{mustIssue(t, c, relay.key)}, relay.chain...)
	if _, err := o.v.Verify(loop); !errors.Is(err, ErrBadChain) || !strings.Contains(err.Error(), "twice") {
		t.Errorf("chain with a loop: %v, want ErrBadChain (appears twice)", err)
	}
}
