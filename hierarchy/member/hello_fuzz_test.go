package member

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/wire"
)

// frame is v as one wire frame.
func frame(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := wire.Write(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// FuzzHelloDecode feeds arbitrary bytes to the hello decoder as a peer's
// stream would, and what decodes to the verifier: no panic, and a frame that
// claims more than maxHello bytes is refused without being allocated.
func FuzzHelloDecode(f *testing.F) {
	o := certtest.NewOrg(f)
	root := o.RootNode(f)
	relay := o.Child(f, root, cert.RoleRelay, "a")
	client := o.Child(f, relay, cert.RoleClient, "a", "tills")
	good := frame(f, helloMsg{Chain: client.Chain})
	f.Add(good)
	f.Add(frame(f, helloMsg{Chain: root.Chain}))
	f.Add(frame(f, wire.Response[helloMsg]{OK: &helloMsg{Chain: relay.Chain}}))
	f.Add(frame(f, wire.Response[helloMsg]{Error: "membership refused"}))
	f.Add(frame(f, helloMsg{}))
	f.Add(frame(f, helloMsg{Chain: cert.Chain{}}))
	f.Add(good[:len(good)/2])                             // cut short
	f.Add(append(bytes.Clone(good), 0x00))                // trailing byte after the frame
	f.Add(binary.AppendUvarint(nil, 1<<40))               // claims a terabyte
	f.Add(append(binary.AppendUvarint(nil, 1<<40), 0xa1)) // claims a terabyte, sends a byte
	f.Add(binary.AppendUvarint(nil, maxHello+1))
	f.Add(binary.AppendUvarint(nil, 1<<63-1))
	f.Add(bytes.Repeat([]byte{0xff}, 10)) // varint longer than 63 bits
	f.Add([]byte{0x00})                   // empty frame
	f.Add(append(binary.AppendUvarint(nil, 3), 0xa1, 0x00, 0x80))
	f.Add(append(binary.AppendUvarint(nil, 2), 0x81, 0x9b)) // array head claiming 2^64 items, cut
	f.Fuzz(func(t *testing.T, data []byte) {
		claimed, n := binary.Uvarint(data)
		var m helloMsg
		err := wire.Read(bytes.NewReader(data), maxHello, &m)
		if n > 0 && claimed > maxHello && err == nil {
			t.Fatalf("accepted a frame claiming %d bytes", claimed)
		}
		if err == nil {
			if certs, err := o.V.Verify(m.Chain); err == nil && (len(certs) != len(m.Chain) || len(certs) == 0) {
				t.Fatalf("verified %d certificates of %d", len(certs), len(m.Chain))
			}
		}
		// The greeting side reads the answer wrapped in a Response.
		var r wire.Response[helloMsg]
		if err := wire.Read(bytes.NewReader(data), maxHello, &r); err == nil && r.OK != nil {
			_, _ = o.V.Verify(r.OK.Chain)
		}
	})
}

// TestHelloReadHugeFrame checks that frames claiming more than maxHello
// bytes are refused before their payload is allocated.
func TestHelloReadHugeFrame(t *testing.T) {
	cases := []struct {
		name    string
		claimed uint64
	}{
		{"one byte too many", maxHello + 1},
		{"a terabyte", 1 << 40},
		{"largest varint", 1<<63 - 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := append(binary.AppendUvarint(nil, tc.claimed), 0xa1, 0x00, 0x80)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			const runs = 10
			for range runs {
				var m helloMsg
				if err := wire.Read(bytes.NewReader(data), maxHello, &m); err == nil {
					t.Fatal("accepted")
				}
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 64<<10 {
				t.Errorf("allocated %d bytes per refused frame", per)
			}
		})
	}
	// A frame of exactly maxHello bytes is read (and refused only as CBOR).
	data := append(binary.AppendUvarint(nil, maxHello), make([]byte, maxHello)...)
	var m helloMsg
	err := wire.Read(bytes.NewReader(data), maxHello, &m)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("decode")) {
		t.Errorf("frame of maxHello zero bytes: %v", err)
	}
	// A stream that stops inside the frame is refused.
	short := append(binary.AppendUvarint(nil, 100), 0xa1)
	if err := wire.Read(bytes.NewReader(short), maxHello, &m); err == nil {
		t.Error("accepted a truncated frame")
	}
}
