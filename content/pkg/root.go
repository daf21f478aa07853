// Package pkg turns a file or a directory into a package and back: a
// deterministic archive (the same tree gives the same root CID on any
// machine), cut into content-defined chunks of about 256 KiB, each
// compressed on its own with zstd unless that does not shrink it, stored as
// blocks, and a root block that lists them. Unpacking checks every block
// and every path, and writes beside the target before it renames.
package pkg

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/swdist/swdist/content/blocks"
)

// Limits on a root block, checked when it is decoded.
const (
	MaxChunkBytes = 1 << 20  // a chunk's raw size (the chunker cuts at 512 KiB)
	MaxChunks     = 1 << 18  // 256 Ki chunks: packages up to about 64 GiB
	MaxRootBytes  = 16 << 20 // the root block itself
	maxNameLen    = 128
	formatV1      = 1
)

// ErrBadRoot: a root block that is malformed or claims absurd sizes.
var ErrBadRoot = errors.New("bad package root")

// Root is a package's root block.
type Root struct {
	V       uint8   `cbor:"0,keyasint"`
	Name    string  `cbor:"1,keyasint"`
	Version string  `cbor:"2,keyasint"`
	Size    uint64  `cbor:"3,keyasint"` // the archive's bytes
	Stored  uint64  `cbor:"4,keyasint"` // the chunks' stored bytes
	Chunks  []Chunk `cbor:"5,keyasint"`
}

// Chunk is one piece of the archive.
type Chunk struct {
	CID    []byte `cbor:"0,keyasint"` // binary CIDv1, raw codec, SHA-256 of the stored bytes
	Raw    uint32 `cbor:"1,keyasint"`
	Stored uint32 `cbor:"2,keyasint"`
	Zstd   bool   `cbor:"3,keyasint,omitempty"`
}

var (
	encMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	decMode = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DupMapKey: cbor.DupMapKeyEnforcedAPF, MaxArrayElements: MaxChunks, MaxNestedLevels: 4,
			ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

// Encode is the root block's bytes and CID (dag-cbor, SHA-256).
func (r Root) Encode() ([]byte, cid.Cid, error) {
	b, err := encMode.Marshal(r)
	if err != nil {
		return nil, cid.Undef, fmt.Errorf("encode package root: %w", err)
	}
	c, err := blocks.CID(blocks.DagCBOR, b)
	return b, c, err
}

// ChunkCID is chunk i's CID.
func (r Root) ChunkCID(i int) cid.Cid {
	c, _ := cid.Cast(r.Chunks[i].CID) // checked by DecodeRoot
	return c
}

// CIDs lists every chunk's CID, in order (a fetch asks for all at once).
func (r Root) CIDs() []cid.Cid {
	out := make([]cid.Cid, len(r.Chunks))
	for i := range r.Chunks {
		out[i] = r.ChunkCID(i)
	}
	return out
}

// DecodeRoot reads and checks a root block.
func DecodeRoot(b []byte) (Root, error) {
	if len(b) > MaxRootBytes {
		return Root{}, fmt.Errorf("%w: %d bytes, at most %d", ErrBadRoot, len(b), MaxRootBytes)
	}
	var r Root
	if err := decMode.Unmarshal(b, &r); err != nil {
		return Root{}, fmt.Errorf("%w: %v", ErrBadRoot, err)
	}
	if r.V != formatV1 {
		return Root{}, fmt.Errorf("%w: format %d, this swdist reads %d: upgrade it", ErrBadRoot, r.V, formatV1)
	}
	if r.Name == "" || len(r.Name) > maxNameLen || len(r.Version) > maxNameLen {
		return Root{}, fmt.Errorf("%w: name %.40q or version %.40q", ErrBadRoot, r.Name, r.Version)
	}
	if len(r.Chunks) > MaxChunks {
		return Root{}, fmt.Errorf("%w: %d chunks, at most %d", ErrBadRoot, len(r.Chunks), MaxChunks)
	}
	var size, stored uint64
	for i, c := range r.Chunks {
		id, err := cid.Cast(c.CID)
		if err != nil {
			return Root{}, fmt.Errorf("%w: chunk %d: %v", ErrBadRoot, i, err)
		}
		if p := id.Prefix(); p.Version != 1 || p.Codec != blocks.Raw || p.MhType != mh.SHA2_256 {
			return Root{}, fmt.Errorf("%w: chunk %d: CID %s is not CIDv1 raw SHA-256", ErrBadRoot, i, id)
		}
		if c.Raw == 0 || c.Raw > MaxChunkBytes || c.Stored == 0 || (c.Zstd && c.Stored >= c.Raw) || (!c.Zstd && c.Stored != c.Raw) {
			return Root{}, fmt.Errorf("%w: chunk %d claims %d bytes stored as %d", ErrBadRoot, i, c.Raw, c.Stored)
		}
		size += uint64(c.Raw)
		stored += uint64(c.Stored)
	}
	if size != r.Size || stored != r.Stored {
		return Root{}, fmt.Errorf("%w: sizes %d/%d do not add up to the chunks' %d/%d", ErrBadRoot, r.Size, r.Stored, size, stored)
	}
	return r, nil
}
