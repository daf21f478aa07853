package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/node/api"
)

func (a *app) packageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "package", Short: "Build packages into this node's block store, list and unpack them"}
	cmd.AddCommand(a.pkgAddCmd(), a.pkgLsCmd(), a.pkgGetCmd())
	return cmd
}

func (a *app) pkgAddCmd() *cobra.Command {
	var name, version string
	cmd := &cobra.Command{
		Use:   "add PATH --name N --version V",
		Short: "Turn a file or directory into a package held by this node",
		Long: `add archives PATH deterministically (the same tree gives the same root CID on
any machine), cuts it into content-defined chunks of about 256 KiB, compresses
each with zstd where that shrinks it, stores them in the node's block store
and records the package. It prints the root CID that jobs name.`,
		Args: args(1, "PATH"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if name == "" || version == "" {
				return usagef("--name and --version are required")
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			// The daemon records the package: make sure it runs first.
			if _, err := call(a, (*api.Client).ID); err != nil {
				return err
			}
			bs, err := blocks.Open(h.Blocks())
			if err != nil {
				return err
			}
			defer bs.Close()
			opts := pkg.BuildOptions{}
			var bar *mpb.Bar
			var p *mpb.Progress
			if f, ok := a.out.(*os.File); ok && !a.json && isatty.IsTerminal(f.Fd()) {
				p = mpb.New(mpb.WithOutput(a.out), mpb.WithWidth(40))
				bar = p.AddBar(0, mpb.PrependDecorators(decor.Name("archiving "+name+" "), decor.CountersKibiByte("% .1f / % .1f")),
					mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), "% .1f"), decor.Percentage(decor.WC{W: 5})))
				opts.Progress = func(done, total int64) {
					bar.SetTotal(total, false)
					bar.SetCurrent(done)
				}
			}
			start := time.Now()
			res, err := pkg.Build(cmd.Context(), argv[0], name, version, bs, opts)
			if bar != nil {
				bar.SetTotal(-1, true)
				p.Wait()
			}
			if err != nil {
				return err
			}
			took := time.Since(start)
			added, err := call(a, func(c *api.Client, ctx context.Context) (api.Package, error) {
				return c.AddPackage(ctx, api.Package{CID: res.Root.String()})
			})
			if err != nil {
				return err
			}
			return a.emit(added, func(w io.Writer) {
				fmt.Fprintf(w, "Package %s@%s: %s\n  %d files, %s archived, %s stored in %d chunks (%.0f%%), %s (%s/s)\n",
					added.Name, added.Version, added.CID, res.Files, humanize.IBytes(added.Size), humanize.IBytes(added.StoredBytes),
					added.Chunks, 100*float64(added.StoredBytes)/float64(max(added.Size, 1)), took.Round(time.Millisecond),
					humanize.IBytes(uint64(float64(added.Size)/max(took.Seconds(), 1e-3))))
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "package name (required)")
	cmd.Flags().StringVar(&version, "version", "", "package version (required)")
	return cmd
}

func (a *app) pkgLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "The packages this node knows, and whether it holds all their blocks",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, err := call(a, (*api.Client).ListPackages)
			if err != nil {
				return err
			}
			return a.emit(ps, func(w io.Writer) {
				if len(ps) == 0 {
					fmt.Fprintln(w, "No packages: add one with 'swdist package add PATH --name N --version V'.")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tCID\tSIZE\tSTORED\tCHUNKS\tHELD\tADDED\tKEPT FOR")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%v\t%s\t%s\n", p.Name, p.Version, p.CID, humanize.IBytes(p.Size),
						humanize.IBytes(p.StoredBytes), p.Chunks, p.Held, ago(p.AddedAt), keptFor(p))
				}
				tw.Flush()
				fmt.Fprintln(w, "A package kept for nothing is removed when the block store is over its budget (blocks.budget).")
			})
		},
	}
}

// keptFor says why a node keeps a package: "added here", the jobs that
// pin it and until when, "installed"; "nothing" when none of them.
func keptFor(p api.Package) string {
	var why []string
	for _, pin := range p.Pins {
		switch {
		case pin.Job == "":
			why = append(why, "added here")
		case pin.Until != nil:
			why = append(why, fmt.Sprintf("job %s until %s", short(pin.Job), pin.Until.Local().Format("2006-01-02 15:04")))
		default:
			why = append(why, "job "+short(pin.Job))
		}
	}
	if p.Installed {
		why = append(why, "installed")
	}
	if len(why) == 0 {
		return "nothing"
	}
	return strings.Join(why, ", ")
}

func (a *app) pkgGetCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get NAME@VERSION|CID --out DIR",
		Short: "Unpack a package this node holds into a new directory",
		Long: `get checks every block of the package against its CID and unpacks it into DIR,
which must not exist (it is written beside DIR and renamed at the end).`,
		Args: args(1, "NAME@VERSION or a package's root CID"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if out == "" {
				return usagef("--out DIR is required")
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			ref := argv[0]
			root, err := cid.Decode(ref)
			if err != nil {
				p, err := call(a, func(c *api.Client, ctx context.Context) (api.Package, error) { return c.FindPackage(ctx, ref) })
				if err != nil {
					return err
				}
				if root, err = cid.Decode(p.CID); err != nil {
					return err
				}
			}
			bs, err := blocks.Open(h.Blocks())
			if err != nil {
				return err
			}
			defer bs.Close()
			var missing []cid.Cid
			r, err := pkg.ReadRoot(cmd.Context(), bs, root)
			switch {
			case errors.Is(err, blocks.ErrNotFound):
				missing = []cid.Cid{root}
			case err != nil:
				return err
			default:
				if missing, err = pkg.Missing(cmd.Context(), bs, r); err != nil {
					return err
				}
			}
			if len(missing) > 0 {
				// The daemon fetches them through the tree.
				if _, err := callFor(a, 30*time.Minute, func(c *api.Client, ctx context.Context) (api.Package, error) {
					return c.FetchPackage(ctx, root.String())
				}); err != nil {
					return err
				}
			}
			if err := pkg.Unpack(cmd.Context(), bs, root, out); err != nil {
				return err
			}
			if r, err = pkg.ReadRoot(cmd.Context(), bs, root); err != nil {
				return err
			}
			res := map[string]any{"cid": root.String(), "name": r.Name, "version": r.Version, "size": r.Size, "out": out}
			return a.emit(res, func(w io.Writer) {
				fmt.Fprintf(w, "Unpacked %s@%s (%s, %s) into %s.\n", r.Name, r.Version, root, humanize.IBytes(r.Size), out)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to create (required)")
	return cmd
}
