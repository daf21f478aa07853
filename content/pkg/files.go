package pkg

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/swdist/swdist/content/blocks"
)

// File is one file for BuildFiles: read from Path, named Name in the
// archive (slash-separated, relative, clean), its first Size bytes.
type File struct {
	Path string
	Name string
	Size int64
	Mode fs.FileMode // permission bits
}

// BuildFiles archives files, picked one by one (a collection of logs,
// say), into store like Build: the same deterministic archive, chunks and
// root, so that Unpack reads it back safely. The directories above the
// files are made in the archive (mode 0755). Each file contributes the
// first Size bytes it had when it was listed: one that grows meanwhile is
// cut there, one that shrinks is an error.
func BuildFiles(ctx context.Context, files []File, name, version string, store *blocks.Store, opts BuildOptions) (Result, error) {
	if err := opts.prepare(name, version); err != nil {
		return Result{}, err
	}
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	var total int64
	dirs := map[string]bool{".": true}
	var list []File // directories (Size -1) before what they hold, in order
	for i, f := range files {
		if !cleanName(f.Name) {
			return Result{}, fmt.Errorf("%w: file name %q", ErrUnsafe, f.Name)
		}
		if i > 0 && files[i-1].Name == f.Name {
			return Result{}, fmt.Errorf("%w: %q twice", ErrUnsafe, f.Name)
		}
		if f.Size < 0 {
			return Result{}, fmt.Errorf("file %s: size %d", f.Path, f.Size)
		}
		var above []string
		for d := path.Dir(f.Name); !dirs[d]; d = path.Dir(d) {
			above = append(above, d)
			dirs[d] = true
		}
		slices.Reverse(above)
		for _, d := range above {
			list = append(list, File{Name: d, Size: -1})
		}
		list = append(list, f)
		total += f.Size
	}
	// No file may be named like a directory made above another.
	for _, f := range files {
		if dirs[f.Name] {
			return Result{}, fmt.Errorf("%w: %q is both a file and a directory", ErrUnsafe, f.Name)
		}
	}
	return buildStream(ctx, name, version, store, opts, total, len(files), func(ctx context.Context, w io.Writer, done *atomic.Int64) error {
		return writeFiles(ctx, list, w, done)
	})
}

// cleanName reports whether name is a relative, clean, slash-separated
// path below the archive's top.
func cleanName(name string) bool {
	return name != "" && name != "." && !strings.ContainsRune(name, 0) && !strings.Contains(name, "\\") && !path.IsAbs(name) &&
		path.Clean(name) == name && name != ".." && !strings.HasPrefix(name, "../")
}

// writeFiles writes list (directories have Size -1) as a tar stream with
// normalised headers, as writeArchive does.
func writeFiles(ctx context.Context, list []File, w io.Writer, done *atomic.Int64) error {
	tw := tar.NewWriter(w)
	for _, f := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := &tar.Header{Name: f.Name, Mode: int64(f.Mode.Perm()), Size: f.Size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if f.Size < 0 {
			h.Typeflag, h.Name, h.Mode, h.Size = tar.TypeDir, f.Name+"/", 0o755, 0
		}
		// A file that grows is taken as large as it was when listed.
		if err := writeEntry(tw, h, f.Path, done, false); err != nil {
			return err
		}
	}
	return tw.Close()
}
