package pkg

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/klauspost/compress/zstd"

	"github.com/swdist/swdist/content/blocks"
)

// ErrUnsafe: an archive entry that would write outside the target, through
// a symlink, twice, or a kind of file a package may not hold.
var ErrUnsafe = errors.New("unsafe archive entry")

// ReadRoot reads and checks the root block c from store.
func ReadRoot(ctx context.Context, store *blocks.Store, c cid.Cid) (Root, error) {
	if c.Prefix().Codec != blocks.DagCBOR {
		return Root{}, fmt.Errorf("%s is not a package root (codec %d)", c, c.Prefix().Codec)
	}
	b, err := store.Get(ctx, c)
	if err != nil {
		return Root{}, err
	}
	return DecodeRoot(b)
}

// Missing lists the chunks of root not held in store.
func Missing(ctx context.Context, store *blocks.Store, r Root) ([]cid.Cid, error) {
	var out []cid.Cid
	for _, c := range r.CIDs() {
		ok, err := store.Has(ctx, c)
		if err != nil {
			return nil, err
		}
		if !ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// Unpack extracts the package root from store into dir, which must not
// exist: it is written beside dir and renamed at the end, so dir is either
// the whole package or absent. Every block is checked against its CID.
func Unpack(ctx context.Context, store *blocks.Store, root cid.Cid, dir string) error {
	r, err := ReadRoot(ctx, store, root)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("unpack into %s: it exists; remove it or choose another directory", dir)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxChunkBytes), zstd.WithDecoderMaxWindow(MaxChunkBytes))
	if err != nil {
		return err
	}
	defer dec.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeChunks(ctx, store, dec, r, pw)) }()
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dir)), "."+filepath.Base(dir)+".unpacking-")
	if err != nil {
		return fmt.Errorf("unpack %s: %w", root, err)
	}
	if err := Extract(pr, tmp, int64(r.Size)); err != nil {
		pr.CloseWithError(err)
		os.RemoveAll(tmp)
		return fmt.Errorf("unpack %s: %w", root, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("unpack %s: %w", root, err)
	}
	return nil
}

// writeChunks writes the archive: each chunk read, checked, decompressed
// within its declared size.
func writeChunks(ctx context.Context, store *blocks.Store, dec *zstd.Decoder, r Root, w io.Writer) error {
	buf := make([]byte, 0, MaxChunkBytes)
	for i, c := range r.Chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := store.Get(ctx, r.ChunkCID(i))
		if err != nil {
			return err
		}
		if uint32(len(data)) != c.Stored {
			return fmt.Errorf("chunk %s: %d bytes, the root says %d", r.ChunkCID(i), len(data), c.Stored)
		}
		if c.Zstd {
			if data, err = dec.DecodeAll(data, buf[:0]); err != nil {
				return fmt.Errorf("chunk %s: decompress: %w", r.ChunkCID(i), err)
			}
		}
		if uint32(len(data)) != c.Raw {
			return fmt.Errorf("chunk %s: %d bytes once decompressed, the root says %d", r.ChunkCID(i), len(data), c.Raw)
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// Extract writes the tar stream r into the directory dir (which exists and
// is empty), refusing anything unsafe: absolute paths, "..", entries under
// a symlink or a file, symlinks that leave dir, duplicates, more than
// maxBytes of file content in all (a sparse file's holes would expand to
// any size), and anything but files, directories and symlinks.
func Extract(r io.Reader, dir string, maxBytes int64) error {
	tr := tar.NewReader(r)
	kinds := map[string]byte{".": tar.TypeDir} // what each path is
	type dirMode struct {
		path string
		mode os.FileMode
	}
	var dirs []dirMode
	var written int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if name == "" || strings.ContainsRune(name, 0) || strings.Contains(h.Name, "\\") || path.IsAbs(name) || path.Clean(name) != name ||
			name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: %q", ErrUnsafe, h.Name)
		}
		if _, dup := kinds[name]; dup {
			return fmt.Errorf("%w: %q twice", ErrUnsafe, name)
		}
		if parent := path.Dir(name); kinds[parent] != tar.TypeDir {
			return fmt.Errorf("%w: %q is not under a directory of the package", ErrUnsafe, name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirMode{target, mode})
		case tar.TypeReg:
			if h.Size < 0 || h.Size > maxBytes-written {
				return fmt.Errorf("%w: %q has size %d, more than the archive holds", ErrUnsafe, name, h.Size)
			}
			written += h.Size
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.CopyN(f, tr, h.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			if err := os.Chmod(target, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if !linkInside(name, h.Linkname) {
				return fmt.Errorf("%w: symlink %q points to %q, outside the package", ErrUnsafe, name, h.Linkname)
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %q is of type %q: a package holds files, directories and symlinks", ErrUnsafe, name, h.Typeflag)
		}
		kinds[name] = h.Typeflag
	}
	// Directories' own modes last: a read-only one must not stop its files.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirs[i].path, dirs[i].mode|0o100); err != nil { // searchable by its owner at least
			return err
		}
	}
	return nil
}
