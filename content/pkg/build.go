package pkg

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/go-cid"
	"github.com/klauspost/compress/zstd"

	"github.com/swdist/swdist/content/blocks"
)

// BuildOptions tune Build.
type BuildOptions struct {
	// Progress, if set, is told the input bytes archived so far and the
	// total, now and then.
	Progress func(done, total int64)
	// Level is the zstd level (default zstd.SpeedDefault).
	Level zstd.EncoderLevel
	// Workers compress chunks in parallel (default 2).
	Workers int
}

// Result is what Build made.
type Result struct {
	Root    cid.Cid
	Name    string
	Version string
	Size    uint64 // the archive's bytes
	Stored  uint64 // the chunks' stored bytes
	Chunks  int
	Files   int
}

// Build archives src (a file or a directory) into store as a package and
// returns its root. The archive streams: memory holds a few chunks.
func Build(ctx context.Context, src, name, version string, store *blocks.Store, opts BuildOptions) (Result, error) {
	if err := opts.prepare(name, version); err != nil {
		return Result{}, err
	}
	entries, total, err := scan(src)
	if err != nil {
		return Result{}, err
	}
	return buildStream(ctx, name, version, store, opts, total, len(entries), func(ctx context.Context, w io.Writer, done *atomic.Int64) error {
		return writeArchive(ctx, entries, w, done)
	})
}

// buildStream cuts the archive that write writes (total input bytes, files
// entries) into chunks, stores them and the root, and returns the root.
func buildStream(ctx context.Context, name, version string, store *blocks.Store, opts BuildOptions, total int64, files int,
	write func(ctx context.Context, w io.Writer, done *atomic.Int64) error) (Result, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(opts.Level), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return Result{}, err
	}
	defer enc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var done atomic.Int64
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(write(ctx, pw, &done)) }()
	stopProgress := make(chan struct{})
	if opts.Progress != nil {
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					opts.Progress(done.Load(), total)
				}
			}
		}()
	}
	defer close(stopProgress)

	type piece struct {
		chunk Chunk
		err   error
	}
	futures := make(chan chan piece, opts.Workers*2)
	sem := make(chan struct{}, opts.Workers)
	go func() {
		defer close(futures)
		split := chunker.NewBuzhash(pr)
		for {
			data, err := split.NextBytes()
			if err == io.EOF {
				return
			}
			f := make(chan piece, 1)
			select {
			case futures <- f:
			case <-ctx.Done():
				return
			}
			if err != nil {
				f <- piece{err: fmt.Errorf("read archive: %w", err)}
				return
			}
			data = append([]byte(nil), data...)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				f <- piece{err: ctx.Err()}
				return
			}
			go func() {
				defer func() { <-sem }()
				c, err := storeChunk(ctx, store, enc, data)
				f <- piece{c, err}
			}()
		}
	}()
	r := Root{V: formatV1, Name: name, Version: version}
	for f := range futures {
		p := <-f
		if p.err != nil {
			cancel()
			pr.CloseWithError(p.err)
			for f := range futures { // let the producers end
				<-f
			}
			return Result{}, p.err
		}
		r.Chunks = append(r.Chunks, p.chunk)
		r.Size += uint64(p.chunk.Raw)
		r.Stored += uint64(p.chunk.Stored)
		if len(r.Chunks) > MaxChunks {
			cancel()
			return Result{}, fmt.Errorf("package %s is too large: more than %d chunks", name, MaxChunks)
		}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	b, root, err := r.Encode()
	if err != nil {
		return Result{}, err
	}
	if err := store.Put(ctx, root, b); err != nil {
		return Result{}, err
	}
	if opts.Progress != nil {
		opts.Progress(total, total)
	}
	return Result{Root: root, Name: name, Version: version, Size: r.Size, Stored: r.Stored, Chunks: len(r.Chunks), Files: files}, nil
}

// storeChunk compresses data unless that does not shrink it, and stores it.
func storeChunk(ctx context.Context, store *blocks.Store, enc *zstd.Encoder, data []byte) (Chunk, error) {
	stored, z := data, false
	if c := enc.EncodeAll(data, make([]byte, 0, len(data))); len(c) < len(data) {
		stored, z = c, true
	}
	id, err := blocks.CID(blocks.Raw, stored)
	if err != nil {
		return Chunk{}, err
	}
	if err := store.Put(ctx, id, stored); err != nil {
		return Chunk{}, err
	}
	return Chunk{CID: id.Bytes(), Raw: uint32(len(data)), Stored: uint32(len(stored)), Zstd: z}, nil
}

// entry is one file, directory or symlink of the archive.
type entry struct {
	path string // on disk
	name string // in the archive, slash-separated, relative
	info fs.FileInfo
	link string
}

// scan lists src's entries in archive order (lexical, as WalkDir walks)
// and sums the bytes of its files. A symlink that leaves the tree, and any
// file that is not regular, a directory or a symlink, is refused.
func scan(src string) ([]entry, int64, error) {
	info, err := os.Lstat(src)
	if err != nil {
		return nil, 0, fmt.Errorf("package source: %w", err)
	}
	if info.Mode().IsRegular() {
		return []entry{{path: src, name: filepath.Base(src), info: info}}, info.Size(), nil
	}
	if !info.IsDir() {
		return nil, 0, fmt.Errorf("package source %s: not a file or a directory", src)
	}
	var out []entry
	var total int64
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{path: p, name: filepath.ToSlash(rel), info: info}
		switch m := info.Mode(); {
		case m.IsRegular():
			total += info.Size()
		case m.IsDir():
		case m&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
			if !linkInside(e.name, e.link) {
				return fmt.Errorf("package source: symlink %s points to %s, outside the package", p, e.link)
			}
		default:
			return fmt.Errorf("package source: %s is a %s: only files, directories and symlinks can be packaged", p, m.Type())
		}
		out = append(out, e)
		return nil
	})
	return out, total, err
}

// linkInside reports whether a symlink at name (relative to the package
// root) pointing to target stays inside the package.
func linkInside(name, target string) bool {
	if target == "" || path.IsAbs(target) || strings.ContainsRune(target, 0) {
		return false
	}
	resolved := path.Join(path.Dir(name), target)
	return resolved != ".." && !strings.HasPrefix(resolved, "../")
}

// writeArchive writes entries as a tar stream with every header normalised:
// no times, no owners, modes' permission bits only.
func writeArchive(ctx context.Context, entries []entry, w io.Writer, done *atomic.Int64) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := &tar.Header{Name: e.name, Mode: int64(e.info.Mode().Perm()), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch m := e.info.Mode(); {
		case m.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		case m&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, e.info.Size()
		}
		if err := writeEntry(tw, h, e.path, done, true); err != nil {
			return err
		}
	}
	return tw.Close()
}

// writeEntry writes header h and, for a regular file, the h.Size bytes of
// the file at path. A file that shrank since it was listed is an error, and
// with exact one that grew too.
func writeEntry(tw *tar.Writer, h *tar.Header, path string, done *atomic.Int64, exact bool) error {
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("archive %s: %w", path, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("archive %s: %w", path, err)
	}
	defer f.Close()
	n, err := io.CopyN(tw, &counting{f, done}, h.Size)
	if err == io.EOF {
		return fmt.Errorf("archive %s: it shrank from %d to %d bytes while being read", path, h.Size, n)
	}
	if err != nil {
		return fmt.Errorf("archive %s: %w", path, err)
	}
	if exact {
		if m, _ := f.Read(make([]byte, 1)); m > 0 {
			return fmt.Errorf("archive %s: it grew while being read", path)
		}
	}
	return nil
}

// prepare checks a package's name and version and fills in opts' defaults.
func (opts *BuildOptions) prepare(name, version string) error {
	if name == "" || len(name) > maxNameLen || len(version) > maxNameLen {
		return fmt.Errorf("package name %q, version %q: a name is required; each at most %d characters", name, version, maxNameLen)
	}
	if opts.Level == 0 {
		opts.Level = zstd.SpeedDefault
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	return nil
}

type counting struct {
	r    io.Reader
	done *atomic.Int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.done.Add(int64(n))
	if errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	return n, err
}
