package gossip

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swdist/swdist/hierarchy/admin"
	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
)

type fixture struct {
	o        certtest.Org
	root     certtest.Node
	ra, rb   certtest.Node
	a1, b1   certtest.Node
	adminKey crypto.PrivKey
	adminAll admin.Signed // scope: whole tree
	adminA   admin.Signed // scope: relay a's subtree
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	f := fixture{o: certtest.NewOrg(t)}
	f.root = f.o.RootNode(t)
	f.ra = f.o.Child(t, f.root, cert.RoleRelay, "a")
	f.rb = f.o.Child(t, f.root, cert.RoleRelay, "b")
	f.a1 = f.o.Child(t, f.ra, cert.RoleClient, "a", "tills")
	f.b1 = f.o.Child(t, f.rb, cert.RoleClient, "b")
	f.adminKey = certtest.NewKey(t)
	now := time.Now()
	certify := func(issuer certtest.Node) admin.Signed {
		s, err := admin.Certify(admin.Cert{Name: "alice", Key: f.adminKey.GetPublic(), Scope: issuer.ID, Issuer: issuer.ID,
			Org: f.o.V.Org, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, issuer.Key, issuer.Chain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f.adminAll, f.adminA = certify(f.root), certify(f.ra)
	return f
}

func testManifest(target ...string) Manifest {
	sel, err := ParseSelector(target)
	if err != nil {
		panic(err)
	}
	now := time.Now().Truncate(time.Second)
	return Manifest{JobID: NewJobID(), Seq: 7, CreatedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Hour),
		Type: "run", Params: map[string]string{"command": "echo hello", "timeout": "30s"}, Target: sel}
}

func TestSignOpen(t *testing.T) {
	f := newFixture(t)
	m := testManifest("site=a", "role=client")
	s, err := Sign(m, f.adminKey, f.adminAll)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(f.o.V, back, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if v.JobID != m.JobID || v.Seq != 7 || v.Params["command"] != "echo hello" || v.Admin.Name != "alice" || !bytes.Equal(v.Raw, raw) {
		t.Errorf("opened %+v", v)
	}
	if !v.Target.Matches(f.o.Certs(t, f.a1)) || v.Target.Matches(f.o.Certs(t, f.b1)) || v.Target.Matches(f.o.Certs(t, f.ra)) {
		t.Error("site=a role=client matched the wrong nodes")
	}
}

func TestOpenRefuses(t *testing.T) {
	f := newFixture(t)
	good, err := Sign(testManifest("all"), f.adminKey, f.adminAll)
	if err != nil {
		t.Fatal(err)
	}
	expired := testManifest("all")
	expired.NotBefore, expired.ExpiresAt = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	cases := []struct {
		name string
		s    func() Signed
		want error
	}{
		{"tampered body", func() Signed {
			s := good
			s.Body = bytes.Replace(bytes.Clone(s.Body), []byte("echo hello"), []byte("rm -rf /*;"), 1)
			return s
		}, ErrSignature},
		{"signed by a key that is not the admin's", func() Signed {
			s, _ := Sign(testManifest("all"), certtest.NewKey(t), f.adminAll)
			return s
		}, ErrSignature},
		{"admin from another organisation", func() Signed {
			o2 := certtest.NewOrg(t)
			r2 := o2.RootNode(t)
			a, _ := admin.Certify(admin.Cert{Name: "mallory", Key: f.adminKey.GetPublic(), Scope: r2.ID, Issuer: r2.ID, Org: o2.V.Org,
				NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}, r2.Key, r2.Chain)
			s, _ := Sign(testManifest("all"), f.adminKey, a)
			return s
		}, ErrUnknownAdm},
		{"expired", func() Signed { s, _ := Sign(expired, f.adminKey, f.adminAll); return s }, ErrExpired},
		{"non-canonical body", func() Signed {
			s := good
			// Re-encode the first head (a map of 9 pairs, 0xa9) in a
			// longer form: same value, not canonical.
			s.Body = append([]byte{0xb8, 0x09}, s.Body[1:]...)
			return s
		}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(f.o.V, tc.s(), time.Now())
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestOversized(t *testing.T) {
	f := newFixture(t)
	m := testManifest("all")
	m.Params["command"] = strings.Repeat("x", MaxManifestBytes)
	if _, err := Sign(m, f.adminKey, f.adminAll); !errors.Is(err, ErrOversized) {
		t.Errorf("Sign: %v, want ErrOversized", err)
	}
	if _, err := Decode(make([]byte, MaxManifestBytes+1)); !errors.Is(err, ErrOversized) {
		t.Errorf("Decode: %v, want ErrOversized", err)
	}
}

func TestScope(t *testing.T) {
	f := newFixture(t)
	s, err := Sign(testManifest("all"), f.adminKey, f.adminA)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(f.o.V, s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		node certtest.Node
		want bool
	}{{f.a1, true}, {f.ra, true}, {f.b1, false}, {f.rb, false}, {f.root, false}} {
		if got := v.ScopeCovers(f.o.Certs(t, tc.node)); got != tc.want {
			t.Errorf("admin of relay a covers %s: %v, want %v", tc.node.ID, got, tc.want)
		}
	}
}

func TestSelector(t *testing.T) {
	f := newFixture(t)
	nodes := map[string]certtest.Node{"root": f.root, "ra": f.ra, "rb": f.rb, "a1": f.a1, "b1": f.b1}
	cases := []struct {
		target []string
		want   []string
	}{
		{[]string{"all"}, []string{"a1", "b1", "ra", "rb", "root"}},
		{[]string{"site=a"}, []string{"a1", "ra"}},
		{[]string{"site=a,b"}, []string{"a1", "b1", "ra", "rb"}},
		{[]string{"role=client"}, []string{"a1", "b1"}},
		{[]string{"group=tills"}, []string{"a1"}},
		{[]string{"site=a", "role=relay"}, []string{"ra"}},
		{[]string{"peer=" + f.b1.ID.String()}, []string{"b1"}},
		{[]string{"subtree=" + f.ra.ID.String()}, []string{"a1", "ra"}},
		{[]string{"subtree=" + f.ra.ID.String(), "role=client"}, []string{"a1"}},
	}
	for _, tc := range cases {
		sel, err := ParseSelector(tc.target)
		if err != nil {
			t.Fatalf("%v: %v", tc.target, err)
		}
		var got []string
		for name, n := range nodes {
			if sel.Matches(f.o.Certs(t, n)) {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v matched %v, want %v", tc.target, got, tc.want)
		}
	}
	for _, bad := range [][]string{nil, {"site"}, {"site="}, {"colour=red"}, {"role=boss"}, {"peer=nope"}, {"subtree=a,b"}} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestSecondEncoderAgrees encodes a fixed manifest body with an independent,
// minimal RFC 8949 §4.2.1 core deterministic encoder and requires the
// production encoder's bytes to be identical.
func TestSecondEncoderAgrees(t *testing.T) {
	id, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	m := Manifest{JobID: hex.EncodeToString(id), Seq: 300, CreatedAt: time.Unix(1700000000, 0), NotBefore: time.Unix(1700000000, 0),
		ExpiresAt: time.Unix(1700003600, 0), Type: "run", Params: map[string]string{"timeout": "30s", "command": "uname -a"},
		Target: Selector{{Key: "site", Values: []string{"a"}}, {Key: "all"}}, Package: &Package{CID: "bafy", Size: 1 << 20}}
	got, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	want := detMap(
		kv{detUint(0), detUint(1)},
		kv{detUint(1), detBytes(id)},
		kv{detUint(2), detUint(300)},
		kv{detUint(3), detUint(1700000000)},
		kv{detUint(4), detUint(1700000000)},
		kv{detUint(5), detUint(1700003600)},
		kv{detUint(6), detText("run")},
		kv{detUint(7), detMap(kv{detText("timeout"), detText("30s")}, kv{detText("command"), detText("uname -a")})},
		kv{detUint(8), detArray(
			detMap(kv{detUint(0), detText("site")}, kv{detUint(1), detArray(detText("a"))}),
			detMap(kv{detUint(0), detText("all")}))},
		kv{detUint(9), detMap(kv{detUint(0), detText("bafy")}, kv{detUint(1), detUint(1 << 20)})},
	)
	if !bytes.Equal(got, want) {
		t.Errorf("encoders disagree:\nproduction %x\nsecond     %x", got, want)
	}
}

// The second encoder: shortest-form heads, definite lengths, map keys in
// the bytewise order of their encodings.
type kv struct{ k, v []byte }

func detHead(major byte, n uint64) []byte {
	switch {
	case n < 24:
		return []byte{major<<5 | byte(n)}
	case n <= 0xff:
		return []byte{major<<5 | 24, byte(n)}
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16([]byte{major<<5 | 25}, uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32([]byte{major<<5 | 26}, uint32(n))
	}
	return binary.BigEndian.AppendUint64([]byte{major<<5 | 27}, n)
}
func detUint(n uint64) []byte  { return detHead(0, n) }
func detBytes(b []byte) []byte { return append(detHead(2, uint64(len(b))), b...) }
func detText(s string) []byte  { return append(detHead(3, uint64(len(s))), s...) }
func detArray(items ...[]byte) []byte {
	out := detHead(4, uint64(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}
func detMap(pairs ...kv) []byte {
	slices.SortFunc(pairs, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	out := detHead(5, uint64(len(pairs)))
	for _, p := range pairs {
		out = append(append(out, p.k...), p.v...)
	}
	return out
}

func FuzzDecodeManifest(f *testing.F) {
	fx := newFixture(&testing.T{})
	s, err := Sign(testManifest("site=a"), fx.adminKey, fx.adminAll)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := Encode(s)
	f.Add(raw)
	f.Add(s.Body)
	f.Add([]byte{0xa3, 0x00, 0x40, 0x01, 0x40, 0x02, 0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			return
		}
		if _, err := Open(fx.o.V, s, time.Now()); err == nil && !bytes.Equal(data, raw) {
			// Only the one signed manifest may ever open.
			if again, _ := Encode(s); !bytes.Equal(again, raw) {
				t.Fatalf("a manifest other than the signed one opened: %x", data)
			}
		}
		_, _ = decodeBody(s.Body)
	})
}
