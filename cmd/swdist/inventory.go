package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/inventory"
)

func (a *app) inventoryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "What every machine has: list, show, sum, export; set custom fields",
		Long: `Every node collects its machine's inventory (system, OS packages, custom fields
from inventory.d in its home) at enrollment, daily and on an 'inventory' job,
and reports what changed up the tree. On the server, and on a relay for its
subtree, these commands query what was reported.

Conditions (--where, repeatable, all must hold):
  FIELD=VALUE  FIELD!=VALUE  FIELD~REGEX  FIELD<N  FIELD<=N  FIELD>N  FIELD>=N
Numbers take units: 10G (GiB), 512M, 10GB (10^9). Item fields (software.name,
disk.free, net.mac) match a machine that has such an item; combined conditions
on one kind must hold for the same item.`,
	}
	cmd.AddCommand(a.invLsCmd(), a.invShowCmd(), a.invSumCmd(), a.invExportCmd(), a.invSetCmd(), a.invUnsetCmd(),
		a.invCollectCmd(), a.invFieldsCmd(), a.invStatsCmd())
	return cmd
}

// invCall is call for inventory queries: the operator's mistake (an
// unknown field, a bad condition, an ambiguous peer) is a usage error (exit
// 2); a peer the node holds no inventory of (404) is a failed operation
// (exit 1).
func invCall[T any](a *app, f func(*api.Client, context.Context) (T, error)) (T, error) {
	v, err := call(a, f)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		return v, usageError{err}
	}
	return v, err
}

func splitFields(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// human formats a value for a table: sizes in bytes get units.
func human(field, v string) string {
	switch field {
	case "memory.total", "memory.available", "disk.size", "disk.free":
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			return humanize.IBytes(n)
		}
	case "boot_time":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			return time.Unix(n, 0).UTC().Format("2006-01-02 15:04")
		}
	case "reported":
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return ago(t)
		}
	case "peer":
		return short(v)
	}
	return v
}

func (a *app) invLsCmd() *cobra.Command {
	var where []string
	var fields string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "One row per machine, with the fields asked for",
		Example: `  swdist inventory ls --where site=b --where disk.free<10G
  swdist inventory ls --where software.name=openssl --fields hostname,software.version`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := api.InventoryQuery{Where: where, Fields: splitFields(fields)}
			rows, err := invCall(a, func(c *api.Client, ctx context.Context) ([]inventory.Row, error) { return c.InventoryList(ctx, q) })
			if err != nil {
				return err
			}
			cols := q.Fields
			if len(cols) == 0 {
				cols = inventory.DefaultFields
			}
			return a.emit(rows, func(w io.Writer) {
				if len(rows) == 0 {
					fmt.Fprintln(w, "No machine matches (or none has reported yet: 'swdist inventory stats').")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, strings.ToUpper(strings.Join(cols, "\t")))
				for _, r := range rows {
					cells := make([]string, len(cols))
					for i, f := range cols {
						vals := r.Values[f]
						for j := range vals {
							vals[j] = human(f, vals[j])
						}
						cells[i] = strings.Join(vals, ",")
						if cells[i] == "" {
							cells[i] = "-"
						}
					}
					if r.Stale {
						cells[0] += " (stale)"
					}
					fmt.Fprintln(tw, strings.Join(cells, "\t"))
				}
				tw.Flush()
				fmt.Fprintln(w, machines(len(rows)))
			})
		},
	}
	cmd.Flags().StringArrayVar(&where, "where", nil, "condition: FIELD=VALUE, FIELD~REGEX, FIELD<N ... (repeatable)")
	cmd.Flags().StringVar(&fields, "fields", "", "columns, comma-separated (default "+strings.Join(inventory.DefaultFields, ",")+")")
	return cmd
}

func (a *app) invShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show PEER",
		Short: "Everything one machine reported, with the time of each part",
		Long:  "PEER is a peer ID or a unique part of one (as 'inventory ls' shows it).",
		Args:  args(1, "PEER"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			m, err := invCall(a, func(c *api.Client, ctx context.Context) (api.InventoryMachine, error) {
				return c.InventoryShow(ctx, argv[0])
			})
			if err != nil {
				return err
			}
			return a.emit(m, func(w io.Writer) { printMachine(w, m) })
		},
	}
}

func printMachine(w io.Writer, m api.InventoryMachine) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "peer id\t%s\nreported\t%s (report %d; last full %s)\n", m.PeerID, ago(m.ReportedAt), m.Seq, ago(m.FullAt))
	if m.Stale {
		fmt.Fprintf(tw, "stale\tyes: a change arrived on a base this node did not hold; some values may be missing until the next full report\n")
	}
	tw.Flush()
	byPart := map[string][]string{}
	for f := range m.Fields {
		p := inventory.Part(f)
		byPart[p] = append(byPart[p], f)
	}
	for _, part := range []string{"system", "custom", "error"} {
		fs := byPart[part]
		if len(fs) == 0 {
			continue
		}
		slices.Sort(fs)
		fmt.Fprintf(w, "\n%s (changed %s)\n", strings.ToUpper(part), ago(m.Parts[part]))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, f := range fs {
			fmt.Fprintf(tw, "  %s\t%s\n", f, human(f, m.Fields[f].Value))
		}
		tw.Flush()
	}
	for _, kind := range slices.Sorted(maps.Keys(m.Items)) {
		its := m.Items[kind]
		k := inventory.Kinds[kind]
		fmt.Fprintf(w, "\n%s: %d (changed %s)\n", strings.ToUpper(kind), len(its), ago(m.Parts[kind]))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  %s\n", strings.ToUpper(strings.Join(k.Attrs, "\t")))
		for _, it := range its {
			cells := make([]string, len(k.Attrs))
			for i, at := range k.Attrs {
				cells[i] = human(kind+"."+at, it.Attrs[at])
				if cells[i] == "" {
					cells[i] = "-"
				}
			}
			fmt.Fprintf(tw, "  %s\n", strings.Join(cells, "\t"))
		}
		tw.Flush()
	}
	if len(m.Changes) > 0 {
		fmt.Fprintf(w, "\nCHANGES (newest first, up to %d)\n", len(m.Changes))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range m.Changes {
			old, cur := "-", "-"
			if c.Old != nil {
				old = *c.Old
			}
			if c.New != nil {
				cur = *c.New
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t→ %s\n", c.At.Local().Format("2006-01-02 15:04:05"), c.Field, old, cur)
		}
		tw.Flush()
	}
}

func (a *app) invSumCmd() *cobra.Command {
	var where, by, stats []string
	cmd := &cobra.Command{
		Use:   "sum --by FIELD [--by FIELD2]",
		Short: "Count machines per value of a field (and sum, min, max, avg of numeric fields)",
		Example: `  swdist inventory sum --by os.version
  swdist inventory sum --by software.version --where software.name=openssl
  swdist inventory sum --by site --stat memory.total`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(by) == 0 {
				return usagef("--by FIELD is required (e.g. --by os.version; 'swdist inventory fields' lists them)")
			}
			q := api.InventoryQuery{Where: where, By: by, Stats: stats}
			s, err := invCall(a, func(c *api.Client, ctx context.Context) (inventory.Sum, error) { return c.InventorySum(ctx, q) })
			if err != nil {
				return err
			}
			return a.emit(s, func(w io.Writer) { printSum(w, s, stats) })
		},
	}
	cmd.Flags().StringArrayVar(&by, "by", nil, "group by this field (repeatable: groups by each combination)")
	cmd.Flags().StringArrayVar(&where, "where", nil, "condition: FIELD=VALUE, FIELD~REGEX, FIELD<N ... (repeatable)")
	cmd.Flags().StringArrayVar(&stats, "stat", nil, "numeric field to sum, min, max and average per group (repeatable)")
	return cmd
}

func printSum(w io.Writer, s inventory.Sum, stats []string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := slices.Clone(s.By)
	head = append(head, "MACHINES")
	for _, f := range stats {
		head = append(head, f+" SUM", "MIN", "MAX", "AVG")
	}
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(head, "\t")))
	for _, r := range s.Rows {
		cells := slices.Clone(r.Values)
		for i := range cells {
			cells[i] = human(s.By[i], cells[i])
		}
		cells = append(cells, strconv.Itoa(r.Count))
		for _, f := range stats {
			if g := r.Stats[f]; g != nil {
				cells = append(cells, num(f, g.Sum), num(f, g.Min), num(f, g.Max), num(f, g.Avg))
			} else {
				cells = append(cells, "-", "-", "-", "-")
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	fmt.Fprint(w, machines(s.Machines))
	for _, f := range slices.Sorted(maps.Keys(s.Totals)) {
		t := s.Totals[f]
		fmt.Fprintf(w, "; %s: sum %s, min %s, max %s, avg %s", f, num(f, t.Sum), num(f, t.Min), num(f, t.Max), num(f, t.Avg))
	}
	fmt.Fprintln(w)
}

func machines(n int) string {
	if n == 1 {
		return "1 machine"
	}
	return fmt.Sprintf("%d machines", n)
}

func num(field string, v float64) string {
	switch field {
	case "memory.total", "memory.available", "disk.size", "disk.free":
		return humanize.IBytes(uint64(v))
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func (a *app) invExportCmd() *cobra.Command {
	var where []string
	var fields, format string
	cmd := &cobra.Command{
		Use:   "export --format csv|json",
		Short: "Every machine's fields, for spreadsheets and other tools",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "csv" && format != "json" {
				return usagef("--format %q: use csv or json", format)
			}
			cols := splitFields(fields)
			if len(cols) == 0 {
				known, err := call(a, (*api.Client).InventoryFields)
				if err != nil {
					return err
				}
				cols = []string{inventory.FieldPeer, inventory.FieldReported}
				for _, f := range known {
					if _, isItem := inventory.Kinds[strings.SplitN(f, ".", 2)[0]]; !isItem && f != inventory.FieldPeer && f != inventory.FieldReported {
						cols = append(cols, f)
					}
				}
			}
			q := api.InventoryQuery{Where: where, Fields: cols}
			rows, err := invCall(a, func(c *api.Client, ctx context.Context) ([]inventory.Row, error) { return c.InventoryList(ctx, q) })
			if err != nil {
				return err
			}
			if format == "json" {
				out := make([]map[string]string, len(rows))
				for i, r := range rows {
					out[i] = map[string]string{}
					for _, f := range cols {
						out[i][f] = strings.Join(r.Values[f], ",")
					}
				}
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			cw := csv.NewWriter(a.out)
			_ = cw.Write(cols)
			for _, r := range rows {
				rec := make([]string, len(cols))
				for i, f := range cols {
					rec[i] = strings.Join(r.Values[f], ",")
				}
				_ = cw.Write(rec)
			}
			cw.Flush()
			return cw.Error()
		},
	}
	cmd.Flags().StringVar(&format, "format", "csv", "csv or json")
	cmd.Flags().StringArrayVar(&where, "where", nil, "condition: FIELD=VALUE, FIELD~REGEX, FIELD<N ... (repeatable)")
	cmd.Flags().StringVar(&fields, "fields", "", "columns, comma-separated (default: every scalar field)")
	return cmd
}

func (a *app) invSetCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "set KEY VALUE",
		Short:   "Set a custom field of this machine's inventory (asset tag, owner, location)",
		Long:    "The field is reported as custom.KEY. It is written to inventory.d/" + "zz-swdist-set.conf in the node's home, next to the operator's own files, and reported at once.",
		Example: "  swdist inventory set asset-tag A-1234\n  swdist inventory set location \"shop 12, back office\"",
		Args:    args(2, "KEY VALUE"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.setCustom(api.CustomRequest{Key: argv[0], Value: argv[1]})
		},
	}
}

func (a *app) invUnsetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unset KEY",
		Short: "Remove a custom field set with 'inventory set'",
		Args:  args(1, "KEY"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			return a.setCustom(api.CustomRequest{Key: argv[0], Unset: true})
		},
	}
}

func (a *app) setCustom(req api.CustomRequest) error {
	res, err := invCall(a, func(c *api.Client, ctx context.Context) (api.CustomResult, error) { return c.InventorySet(ctx, req) })
	if err != nil {
		return err
	}
	return a.emit(res, func(w io.Writer) {
		if req.Unset {
			fmt.Fprintf(w, "Removed custom.%s (in %s); the change is being reported.\n", res.Key, res.File)
			return
		}
		fmt.Fprintf(w, "Set custom.%s = %q (in %s); the change is being reported.\n", res.Key, res.Value, res.File)
	})
}

func (a *app) invCollectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "collect",
		Short: "Collect this machine's inventory now and report what changed",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := call(a, (*api.Client).InventoryCollect)
			if err != nil {
				return err
			}
			return a.emit(res, func(w io.Writer) {
				kind := fmt.Sprintf("%d changes", res.Changes)
				if res.Full {
					kind = "full inventory"
				}
				fmt.Fprintf(w, "Inventory %d reported (%s).\n", res.Seq, kind)
			})
		},
	}
}

func (a *app) invFieldsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fields",
		Short: "List the fields that --where, --by and --fields can name",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs, err := call(a, (*api.Client).InventoryFields)
			if err != nil {
				return err
			}
			return a.emit(fs, func(w io.Writer) {
				for _, f := range fs {
					if inventory.IsNumeric(f) {
						f += " (numeric)"
					}
					fmt.Fprintln(w, f)
				}
			})
		},
	}
}

func (a *app) invStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "How many machines this node holds inventory for, and what it refused",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := call(a, (*api.Client).InventoryStats)
			if err != nil {
				return err
			}
			return a.emit(st, func(w io.Writer) {
				fmt.Fprintf(w, "machines: %d (stale: %d)\n", st.Machines, st.Stale)
				if len(st.Refused) == 0 {
					fmt.Fprintln(w, "refused reports: none")
					return
				}
				for _, r := range slices.Sorted(maps.Keys(st.Refused)) {
					fmt.Fprintf(w, "refused reports, %s: %d\n", r, st.Refused[r])
				}
			})
		},
	}
}
