// Package blocks is a node's store of content-addressed blocks: boxo's
// blockstore over a flatfs directory (blocks/ in the node's home). Every
// block read is checked against its CID, so a block corrupted on disk is
// an error naming it, never wrong bytes.
package blocks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bstore "github.com/ipfs/boxo/blockstore"
	blockformat "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	mh "github.com/multiformats/go-multihash"
)

// Codecs of the blocks swdist makes.
const (
	Raw     = cid.Raw     // a chunk of a package
	DagCBOR = cid.DagCBOR // a package's root block
)

// ErrNotFound: the block is not held here.
var ErrNotFound = errors.New("block not held here")

// ErrCorrupt: what is stored under a CID does not hash to it.
var ErrCorrupt = errors.New("block does not match its CID")

// Store is an open block store.
type Store struct {
	ds *flatfs.Datastore
	bs bstore.Blockstore

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]bool // by multihash: who waits for that block (Notify)

	opMu   sync.Mutex
	ops    map[uint64]time.Time // reads and writes of blocks under way, since (Stalled)
	nextOp uint64
}

// Open opens (creating if needed) the block store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("block store %s: %w", dir, err)
	}
	var ds *flatfs.Datastore
	var err error
	for try := 0; ; try++ {
		ds, err = flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), false)
		// flatfs empties its temporary directory at open; a daemon
		// writing a block into it at that moment ('package add' beside a
		// running node) makes that fail for an instant.
		if err == nil || try == 10 || !strings.Contains(err.Error(), "temporary directory") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("block store %s: %w", dir, err)
	}
	return &Store{ds: ds, bs: bstore.NewBlockstore(ds, bstore.NoPrefix()), waiters: map[string]map[chan struct{}]bool{},
		ops: map[uint64]time.Time{}}, nil
}

// op marks a read or write of a block under way until end is called.
func (s *Store) op() (end func()) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	id := s.nextOp
	s.nextOp++
	s.ops[id] = time.Now()
	return func() {
		s.opMu.Lock()
		delete(s.ops, id)
		s.opMu.Unlock()
	}
}

// Stalled says whether a read or write of a block has been under way for
// longer than d: the disk under the store stopped answering.
func (s *Store) Stalled(d time.Duration) bool {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	for _, since := range s.ops {
		if time.Since(since) > d {
			return true
		}
	}
	return false
}

// Close closes the store.
func (s *Store) Close() error { return s.ds.Close() }

// CID is the CIDv1 of data with the given codec, over SHA-256.
func CID(codec uint64, data []byte) (cid.Cid, error) {
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(codec, h), nil
}

// Put stores data as the block c, after checking that data hashes to c.
func (s *Store) Put(ctx context.Context, c cid.Cid, data []byte) error {
	if err := Check(c, data); err != nil {
		return err
	}
	b, err := blockformat.NewBlockWithCid(data, c)
	if err != nil {
		return err
	}
	end := s.op()
	err = s.bs.Put(ctx, b)
	end()
	if err != nil {
		return fmt.Errorf("store block %s: %w", c, err)
	}
	s.mu.Lock()
	for ch := range s.waiters[string(c.Hash())] {
		select {
		case ch <- struct{}{}:
		default: // told already, and not yet looked
		}
	}
	s.mu.Unlock()
	return nil
}

// Notify returns a channel told (it holds one signal, however many
// arrive) each time one of cids is stored, until stop is called. Call it
// before looking for the blocks, then wait on it for those not there yet:
// a block stored in between is not missed. Only the waiters for a block
// are woken when it arrives, so a relay with thousands of requests
// waiting does not look again for all their blocks at every one.
func (s *Store) Notify(cids []cid.Cid) (arrived <-chan struct{}, stop func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	for _, c := range cids {
		k := string(c.Hash())
		if s.waiters[k] == nil {
			s.waiters[k] = map[chan struct{}]bool{}
		}
		s.waiters[k][ch] = true
	}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range cids {
			k := string(c.Hash())
			if delete(s.waiters[k], ch); len(s.waiters[k]) == 0 {
				delete(s.waiters, k)
			}
		}
	}
}

// Check verifies that data hashes to c.
func Check(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("block %s: %w", c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("block %s: %w (got %s)", c, ErrCorrupt, got)
	}
	return nil
}

// Get returns the block c, checked against its CID.
func (s *Store) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	end := s.op()
	b, err := s.bs.Get(ctx, c)
	end()
	if errors.Is(err, bstore.ErrHashMismatch) {
		return nil, fmt.Errorf("block %s: %w", c, ErrCorrupt)
	}
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("block %s: %w", c, ErrNotFound)
		}
		return nil, fmt.Errorf("read block %s: %w", c, err)
	}
	if err := Check(c, b.RawData()); err != nil {
		return nil, err
	}
	return b.RawData(), nil
}

func isNotFound(err error) bool {
	var nf interface{ NotFound() bool }
	return errors.As(err, &nf) && nf.NotFound()
}

// Has reports whether the block c is held.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	defer s.op()()
	return s.bs.Has(ctx, c)
}

// Delete removes the block c.
func (s *Store) Delete(ctx context.Context, c cid.Cid) error {
	defer s.op()()
	return s.bs.DeleteBlock(ctx, c)
}

// Size is the bytes the store holds on disk.
func (s *Store) Size() (uint64, error) { return s.ds.DiskUsage(context.Background()) }

// Keys calls fn with the multihash (as a string, like cid.Cid.Hash's bytes)
// of every block held, until fn returns false or ctx ends.
func (s *Store) Keys(ctx context.Context, fn func(mh string) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return fmt.Errorf("list blocks: %w", err)
	}
	for c := range ch {
		if !fn(string(c.Hash())) {
			return nil
		}
	}
	return ctx.Err()
}

// DeleteHash removes the block whose multihash is mh, whatever its codec.
func (s *Store) DeleteHash(ctx context.Context, mh string) error {
	return s.bs.DeleteBlock(ctx, cid.NewCidV1(Raw, []byte(mh)))
}
