package node_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/exchange"
	"github.com/swdist/swdist/content/swarm"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/hierarchy/enroll"
	"github.com/swdist/swdist/hierarchy/member"
	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/hierarchy/revoke"
	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/internal/wire"
)

func frame(n uint64, body []byte) []byte {
	buf := binary.AppendUvarint(nil, n)
	return append(buf, body...)
}

// badInputs are frames no handler may choke on.
var badInputs = []struct {
	name string
	data []byte
}{
	{"garbage", []byte("\xff\xfe\xfd this is not cbor at all")},
	{"huge length prefix", frame(1<<40, []byte("x"))},
	{"length just over a megabyte", frame(1<<20+1, bytes.Repeat([]byte{0xa0}, 4096))},
	{"truncated frame", frame(100, []byte{0xa1, 0x00})},
	{"cbor of the wrong shape", frame(3, []byte{0x83, 0x01, 0x02})},
	{"deeply nested cbor", frame(2000, bytes.Repeat([]byte{0x81}, 2000))},
	{"empty stream", nil},
}

// sendBad writes data on a new stream for proto, closes its write side and
// reads whatever comes back. It returns how the exchange ended; it must end
// (the handler must not hang) and must not be a success.
func sendBad(t *testing.T, from host.Host, to peer.ID, proto protocol.ID, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to, proto)
	if err != nil {
		return // refused outright: fine
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(40 * time.Second)) // beyond the handlers' own 30 s deadline
	_, _ = s.Write(data)
	_ = s.CloseWrite()
	resp, err := io.ReadAll(io.LimitReader(s, 1<<20))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the handler hung on bad input", proto)
	}
	if err != nil || len(resp) == 0 {
		return // reset or closed: fine
	}
	// An answer must be an error response (field 1), never a result.
	var answer map[int]any
	if err := wire.Read(bytes.NewReader(resp), 1<<20, &answer); err != nil {
		t.Fatalf("%s answered bad input with an unreadable frame: %v", proto, err)
	}
	if _, isErr := answer[1]; !isErr {
		t.Errorf("%s answered bad input with a result: %v", proto, answer)
	}
}

// sendGood writes one well-formed request frame for proto and reads one
// frame back: the handler still serves after all the bad input.
// sendSilent is sendBad for a protocol whose answers are not
// request/response frames (blocks): bad input must end the stream with no
// frame at all.
func sendSilent(t *testing.T, from host.Host, to peer.ID, proto protocol.ID, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to, proto)
	if err != nil {
		return
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(40 * time.Second))
	_, _ = s.Write(data)
	_ = s.CloseWrite()
	resp, err := io.ReadAll(io.LimitReader(s, 1<<20))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the handler hung on bad input", proto)
	}
	if len(resp) > 0 {
		t.Errorf("%s answered bad input with %d bytes", proto, len(resp))
	}
}

func sendGood(t *testing.T, from host.Host, to peer.ID, proto protocol.ID, req any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to, proto)
	if err != nil {
		t.Fatalf("%s after bad input: %v", proto, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(30 * time.Second))
	if err := wire.Write(s, req); err != nil {
		t.Fatalf("%s after bad input: write: %v", proto, err)
	}
	_ = s.CloseWrite()
	var answer map[int]any
	if err := wire.Read(s, 1<<20, &answer); err != nil {
		t.Fatalf("%s after bad input: no answer to a good request: %v", proto, err)
	}
}

func TestProtocolsSurviveBadInput(t *testing.T) {
	c := standard(t)
	relay := c.nodes["relay-a"].Host()
	a1 := c.nodes["a1"].Host()
	// A block nobody holds: the blocks protocol answers it "missing".
	absent, err := blocks.CID(cid.Raw, []byte("held by nobody"))
	if err != nil {
		t.Fatal(err)
	}
	// Each guarded protocol gets its bad input from a verified member whose
	// requests it reads (so the input reaches the decoder, past the
	// membership and role checks): the tree and admin from the relay's
	// parent; renewal, sync, reports, blocks and peers from a child;
	// revocations from any member; collect, which a node serves to its
	// parent, from the relay to its child. good is a well-formed request
	// each must still answer afterwards (refusals have no answer).
	guarded := []struct {
		from, to host.Host
		proto    protocol.ID
		silent   bool // never answers bad input with a frame, not even an error
		good     any
	}{
		{c.nodes["server"].Host(), relay, tree.Protocol, false, map[int]any{}},
		{c.nodes["server"].Host(), relay, tree.ProtocolV1, false, map[int]any{}},
		{a1, relay, enroll.RenewProtocol, false, map[int]any{}},
		{c.nodes["a2"].Host(), relay, revoke.Protocol, false, map[int]any{}},
		{a1, relay, gossip.SyncProtocol, false, map[int]any{0: 0}},
		{a1, relay, report.Protocol, false, map[int]any{}},
		{a1, relay, exchange.Protocol, true, map[int]any{0: [][]byte{absent.Bytes()}, 3: 1000}},
		{a1, relay, exchange.ProtocolV11, true, map[int]any{0: [][]byte{absent.Bytes()}}},
		{a1, relay, swarm.Protocol, false, map[int]any{}},
		{a1, relay, swarm.ProtocolV1, false, map[int]any{}},
		{c.nodes["server"].Host(), relay, "/swdist/admin/1.0.0", false, map[int]any{}},
		{relay, a1, "/swdist/collect/1.0.0", false, map[int]any{}},
		{a1, relay, member.RefusalProtocol, true, nil}, // one message, no answer
	}
	for _, in := range badInputs {
		t.Run(in.name, func(t *testing.T) {
			for _, g := range guarded {
				if g.silent {
					sendSilent(t, g.from, g.to.ID(), g.proto, in.data)
				} else {
					sendBad(t, g.from, g.to.ID(), g.proto, in.data)
				}
			}
			// Enroll answers anyone; an outsider sends it garbage.
			outsider, err := libp2p.New(libp2p.NoListenAddrs)
			if err != nil {
				t.Fatal(err)
			}
			defer outsider.Close()
			if err := outsider.Connect(context.Background(), peer.AddrInfo{ID: relay.ID(), Addrs: relay.Addrs()}); err != nil {
				t.Fatal(err)
			}
			sendBad(t, outsider, relay.ID(), enroll.EnrollProtocol, in.data)
			sendBad(t, outsider, relay.ID(), member.HelloProtocol, in.data)
		})
	}
	// Every protocol still answers a good request, the relay still serves
	// its subtree, and a1 is still a member.
	for _, g := range guarded {
		if g.good != nil {
			sendGood(t, g.from, g.to.ID(), g.proto, g.good)
		}
	}
	eventually(t, "tree still complete", func() bool {
		return onlineIn(c.nodes["server"], c.id("a1")) && onlineIn(c.nodes["server"], c.id("a2"))
	})
}
