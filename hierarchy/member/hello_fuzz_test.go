package member

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/internal/certtest"
	"github.com/swdist/swdist/internal/wire"
)

// FuzzHelloDecode feeds arbitrary bytes to the hello decoder as a peer's
// stream would, and what decodes to the verifier: no panic, and a frame that
// claims a huge length is refused without being allocated.
func FuzzHelloDecode(f *testing.F) {
	o := certtest.NewOrg(f)
	root := o.RootNode(f)
	client := o.Child(f, o.Child(f, root, cert.RoleRelay, "a"), cert.RoleClient, "a")
	var good bytes.Buffer
	if err := wire.Write(&good, helloMsg{Chain: client.Chain}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Add(append(binary.AppendUvarint(nil, 3), 0xa1, 0x00, 0x80))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m helloMsg
		if err := wire.Read(bytes.NewReader(data), maxHello, &m); err != nil {
			return
		}
		_, _ = o.V.Verify(m.Chain)
	})
}
