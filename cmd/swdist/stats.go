package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/swdist/swdist/node/api"
)

func (a *app) statsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "stats", Short: "Counters of the running node"}
	cmd.AddCommand(&cobra.Command{
		Use:   "bw",
		Short: "Bytes in and out per protocol and per peer since the daemon started",
		Long: `Bytes of every libp2p stream since the daemon started, in total, per protocol
and per peer, so that an operator sees who served whom. Connection overhead
(handshakes, multiplexer and encryption framing) is not counted.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			bw, err := call(a, (*api.Client).Bandwidth)
			if err != nil {
				return err
			}
			return a.emit(bw, func(w io.Writer) { printBandwidth(w, bw) })
		},
	})
	return cmd
}

func printBandwidth(w io.Writer, bw api.Bandwidth) {
	b := func(n int64) string { return humanize.IBytes(uint64(n)) }
	r := func(f float64) string { return humanize.IBytes(uint64(f)) + "/s" }
	fmt.Fprintf(w, "Since %s: in %s, out %s (now %s in, %s out)\n\n", bw.Since, b(bw.Total.In), b(bw.Total.Out), r(bw.Total.RateIn), r(bw.Total.RateOut))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTOCOL\tIN\tOUT")
	protos := slices.SortedFunc(maps.Keys(bw.Protocols), func(x, y string) int {
		px, py := bw.Protocols[x], bw.Protocols[y]
		return cmp.Or(cmp.Compare(py.In+py.Out, px.In+px.Out), cmp.Compare(x, y))
	})
	for _, p := range protos {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p, b(bw.Protocols[p].In), b(bw.Protocols[p].Out))
	}
	tw.Flush()
	if len(bw.Peers) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tRELATION\tROLE\tSITE\tIN\tOUT")
	for _, p := range bw.Peers {
		rel := p.Relation
		if rel == "" {
			rel = "(gone)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", short(p.PeerID), rel, p.Role, p.Site, b(p.In), b(p.Out))
	}
	tw.Flush()
}
