package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
)

func (a *app) idCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Show who this node is",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := call(a, (*api.Client).ID)
			if err != nil {
				return err
			}
			return a.emit(id, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				parent := id.Parent
				if parent == "" {
					parent = "(none: this is the root)"
				}
				fmt.Fprintf(tw, "peer id\t%s\nrole\t%s\nsite\t%s\nparent\t%s\ngroups\t%s\norganisation\t%s\ncertificate until\t%s\n",
					id.PeerID, id.Role, id.Site, parent, strings.Join(id.Groups, ", "), id.Org, id.CertNotAfter.Format(time.RFC3339))
				for i, ad := range id.Addrs {
					label := ""
					if i == 0 {
						label = "addresses"
					}
					fmt.Fprintf(tw, "%s\t%s\n", label, ad)
				}
				tw.Flush()
			})
		},
	}
}

func (a *app) peersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "List the connected, verified peers",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := call(a, (*api.Client).Peers)
			if err != nil {
				return err
			}
			return a.emit(peers, func(w io.Writer) {
				if len(peers) == 0 {
					fmt.Fprintln(w, "No peers connected.")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "RELATION\tROLE\tSITE\tPEER\tADDRESS\tSINCE")
				for _, p := range peers {
					addr := ""
					if len(p.Addrs) > 0 {
						addr = p.Addrs[0]
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Relation, p.Role, p.Site, p.PeerID, addr, ago(p.Since))
				}
				tw.Flush()
			})
		},
	}
}

func (a *app) treeCmd() *cobra.Command {
	var depth int
	var wide bool
	var jobID string
	cmd := &cobra.Command{
		Use:   "tree",
		Short: "Show the hierarchy below this node, with each node's state",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if depth < -1 {
				return usagef("--depth %d: use a number of levels, or -1 for all", depth)
			}
			t, err := call(a, func(c *api.Client, ctx context.Context) (tree.Node, error) { return c.Tree(ctx, depth) })
			if err != nil {
				return err
			}
			if jobID == "" {
				return a.emit(t, func(w io.Writer) { printTree(w, t, wide, nil) })
			}
			st, err := call(a, func(c *api.Client, ctx context.Context) (api.JobStatus, error) { return c.JobStatus(ctx, jobID, true) })
			if err != nil {
				return err
			}
			doc := struct {
				Tree tree.Node     `json:"tree"`
				Job  api.JobStatus `json:"job"`
			}{t, st}
			return a.emit(doc, func(w io.Writer) {
				states := st.Destinations
				for p, f := range st.Progress { // how far each fetching node got
					states[p] += " " + fetchText(f)
				}
				printTree(w, t, wide, states)
				fmt.Fprintf(w, "job %s: %d destinations, %.0f%% done\n", st.ID, st.Expected, st.DonePercent)
			})
		},
	}
	cmd.Flags().IntVar(&depth, "depth", -1, "levels below this node to show (-1: all)")
	cmd.Flags().StringVar(&jobID, "job", "", "also show each node's state for this job (--json: {tree, job} with job.destinations)")
	cmd.Flags().BoolVar(&wide, "wide", false, "show whole peer IDs")
	return cmd
}

// printTree draws the tree as an aligned table with branch lines; with
// job, each node's state for a job ("-" where it is not a destination).
func printTree(w io.Writer, t tree.Node, wide bool, job map[string]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "NODE\tSITE\tPEER\tADDRESS\tSTATE\tLAST SEEN\tCHILDREN"
	if job != nil {
		head += "\tJOB"
	}
	fmt.Fprintln(tw, head)
	online, total := 0, 0
	var walk func(n tree.Node, prefix, branch string)
	walk = func(n tree.Node, prefix, branch string) {
		total++
		state, seen := "offline", ago(n.LastSeen)
		if n.Online {
			online++
			state, seen = "online", "now"
		}
		id := n.PeerID
		if !wide {
			id = short(id)
		}
		addr := firstAddr(n.Addrs)
		line := fmt.Sprintf("%s%s\t%s\t%s\t%s\t%s\t%s\t%d", prefix+branch, n.Role, n.Site, id, addr, state, seen, n.ChildrenCount)
		if job != nil {
			js, ok := job[n.PeerID]
			if !ok {
				js = "-"
			}
			line += "\t" + js
		}
		fmt.Fprintln(tw, line)
		if n.Error != "" {
			what := "subtree not shown"
			if n.Stale {
				what = "subtree as it last answered"
			}
			fmt.Fprintf(tw, "%s  (%s: %s)\t\t\t\t\t\t\n", prefix+childPrefix(branch), what, n.Error)
		}
		for i, c := range n.Children {
			b := "├─ "
			if i == len(n.Children)-1 {
				b = "└─ "
			}
			walk(c, prefix+childPrefix(branch), b)
		}
	}
	walk(t, "", "")
	tw.Flush()
	fmt.Fprintf(w, "%d nodes, %d online\n", total, online)
}

func childPrefix(branch string) string {
	switch branch {
	case "├─ ":
		return "│  "
	case "└─ ":
		return "   "
	}
	return ""
}

// firstAddr picks the address to show: a non-loopback one if there is one.
func firstAddr(addrs []string) string {
	for _, a := range addrs {
		if !strings.Contains(a, "/127.0.0.1/") && !strings.Contains(a, "/::1/") {
			return a
		}
	}
	if len(addrs) > 0 {
		return addrs[0]
	}
	return "-"
}

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Make join tokens that enroll new nodes"}
	var req api.TokenRequest
	create := &cobra.Command{
		Use:   "create --role client|relay [--parent PEER] [--site S] [--group G]... [--ttl D]",
		Short: "Make a one-time token that enrolls one node",
		Long: `token create makes a one-time token that enrolls one new node under --parent
(this node by default, or any relay below it). Run 'swdist join TOKEN' on the
new machine. The token carries the parent's addresses and is signed by this
node; keep it secret until used.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Role != "client" && req.Role != "relay" {
				return usagef("--role %q: use client or relay", req.Role)
			}
			tok, err := call(a, func(c *api.Client, ctx context.Context) (api.Token, error) { return c.CreateToken(ctx, req) })
			if err != nil {
				return err
			}
			return a.emit(tok, func(w io.Writer) {
				fmt.Fprintln(w, tok.Token)
				fmt.Fprintf(a.errOut, "One-time token for a %s under %s at site %s, valid until %s.\nOn the new machine run: swdist join TOKEN\n",
					tok.Role, tok.Parent, tok.Site, tok.ExpiresAt.Local().Format(time.RFC1123))
			})
		},
	}
	create.Flags().StringVar(&req.Role, "role", "", "role of the new node: client or relay (required)")
	create.Flags().StringVar(&req.Parent, "parent", "", "peer ID of the new node's parent: this node or a relay below it (default this node)")
	create.Flags().StringVar(&req.Site, "site", "", "site of the new node (default the parent's)")
	create.Flags().StringArrayVar(&req.Groups, "group", nil, "group of the new node, repeatable")
	create.Flags().StringVar(&req.TTL, "ttl", "", "how long the token stays valid, like 30m or 24h (default from config)")
	cmd.AddCommand(create)
	return cmd
}

func (a *app) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Manage the nodes below this one"}
	var reason string
	revoke := &cobra.Command{
		Use:   "revoke PEER",
		Short: "Revoke a node below this one; the whole tree refuses it and its subtree",
		Args:  args(1, "the PEER ID of the node to revoke"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			r, err := call(a, func(c *api.Client, ctx context.Context) (api.Revocation, error) {
				return c.Revoke(ctx, api.RevokeRequest{Peer: argv[0], Reason: reason})
			})
			if err != nil {
				return err
			}
			return a.emit(r, func(w io.Writer) {
				fmt.Fprintf(w, "Revoked %s. The tree refuses it, and any node below it, from now on.\n", r.Peer)
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why, for the record")
	cmd.AddCommand(revoke)
	return cmd
}
