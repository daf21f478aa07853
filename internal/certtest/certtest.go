// Package certtest builds real organisations and certificate chains for
// tests: real Ed25519 keys, real signatures, nothing faked.
package certtest

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swdist/swdist/hierarchy/cert"
)

// Org is an organisation: its root key and a verifier for it.
type Org struct {
	Root crypto.PrivKey
	V    *cert.Verifier
}

// NewOrg makes an organisation with a fresh root key.
func NewOrg(t testing.TB) Org {
	t.Helper()
	k := NewKey(t)
	v, err := cert.NewVerifier(k.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	return Org{Root: k, V: v}
}

// NewKey makes an Ed25519 key.
func NewKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ID is the peer ID of key.
func ID(t testing.TB, key crypto.PrivKey) peer.ID {
	t.Helper()
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Node is a member of a test organisation: its key and its chain.
type Node struct {
	Key   crypto.PrivKey
	ID    peer.ID
	Chain cert.Chain
}

// RootValid makes the root node (a server at site hq), valid from nb to na.
func (o Org) RootValid(t testing.TB, nb, na time.Time) Node {
	t.Helper()
	key := NewKey(t)
	id := ID(t, key)
	s, err := cert.Issue(cert.Cert{PeerID: id, Role: cert.RoleServer, Site: "hq", Org: o.V.Org, NotBefore: nb, NotAfter: na}, o.Root)
	if err != nil {
		t.Fatal(err)
	}
	return Node{Key: key, ID: id, Chain: cert.Chain{s}}
}

// RootNode makes a root node valid for an hour around now.
func (o Org) RootNode(t testing.TB) Node {
	return o.RootValid(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

// Child makes a node of the given role and site under parent, valid for an
// hour around now. groups are optional.
func (o Org) Child(t testing.TB, parent Node, role cert.Role, site string, groups ...string) Node {
	t.Helper()
	key := NewKey(t)
	return o.ChildWithKey(t, parent, key, role, site, groups...)
}

// ChildWithKey is Child for a given key.
func (o Org) ChildWithKey(t testing.TB, parent Node, key crypto.PrivKey, role cert.Role, site string, groups ...string) Node {
	t.Helper()
	id := ID(t, key)
	now := time.Now()
	s, err := cert.Issue(cert.Cert{PeerID: id, Role: role, Parent: parent.ID, Site: site, Groups: groups, Org: o.V.Org,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	return Node{Key: key, ID: id, Chain: append(cert.Chain{s}, parent.Chain...)}
}

// Certs verifies n's chain with o and returns its certificates.
func (o Org) Certs(t testing.TB, n Node) []cert.Cert {
	t.Helper()
	certs, err := o.V.Verify(n.Chain)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}
