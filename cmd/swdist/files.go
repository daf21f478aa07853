package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
)

func (a *app) jobFilesCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "files ID [--out DIR]",
		Short: "The files a collect job gathered, per destination; --out writes them",
		Long: `files lists what each destination of a collect job gathered, as this
managing node knows it: its files, their bytes, the root CID, and whether the
blocks are held here. With --out, what is not held here yet is fetched through
the tree first (every block checked), and each destination's files are written
to DIR/NAME/<their absolute path>, NAME being the destination's hostname where
that is known and unique, its peer ID otherwise. DIR must be new or empty.
Exit status 1 if the files of any destination could not be fetched.`,
		Args: args(1, "a collect job's ID (see 'swdist job ls')"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			id := argv[0]
			if out == "" {
				jf, err := call(a, func(c *api.Client, ctx context.Context) (api.JobFiles, error) { return c.JobFiles(ctx, id, false) })
				if err != nil {
					return err
				}
				return a.emit(jf, func(w io.Writer) { printJobFiles(w, jf) })
			}
			dir, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			jf, err := callFor(a, 30*time.Minute, func(c *api.Client, ctx context.Context) (api.JobFiles, error) { return c.JobFiles(ctx, id, true) })
			if err != nil {
				return err
			}
			written, err := node.WriteJobFiles(cmd.Context(), h.Blocks(), jf, dir)
			if err != nil {
				return err
			}
			jf.Out, jf.Written = dir, written
			if err := a.emit(jf, func(w io.Writer) { printJobFiles(w, jf) }); err != nil {
				return err
			}
			var failed []string
			for _, p := range jf.Peers {
				if p.State == node.FilesFailed {
					failed = append(failed, p.PeerID)
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("the files of %d destinations could not be fetched: %s", len(failed), strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "fetch what is not held here and write each destination's files under this new directory")
	return cmd
}

func printJobFiles(w io.Writer, jf api.JobFiles) {
	collected := 0
	for _, p := range jf.Peers {
		if p.State == node.FilesCollected {
			collected++
		}
	}
	switch {
	case jf.Out != "":
		fmt.Fprintf(w, "Job %s: the files of %d of %d destinations written to %s\n\n", jf.ID, len(jf.Written), len(jf.Peers), jf.Out)
	default:
		fmt.Fprintf(w, "Job %s: the files of %d of %d destinations held here\n\n", jf.ID, collected, len(jf.Peers))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIR\tPEER\tSTATE\tFILES\tSIZE\tCID")
	for _, p := range jf.Peers {
		files, size := "", ""
		if p.CID != "" {
			files, size = fmt.Sprint(p.Files), humanize.IBytes(uint64(p.Bytes))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Dir, short(p.PeerID), p.State, files, size, p.CID)
	}
	tw.Flush()
	var notes []string
	for _, p := range jf.Peers {
		if p.Error != "" {
			notes = append(notes, fmt.Sprintf("%s (%s): %s", p.Dir, p.State, p.Error))
		}
		if len(p.Skipped) > 0 {
			notes = append(notes, p.Dir+", not collected:")
			for _, s := range p.Skipped {
				notes = append(notes, "  "+s)
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n"))
	}
}
