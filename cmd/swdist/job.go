package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/job"
)

// jobTypes are the job types that can be created now.
var jobTypes = []string{"run", "install", "uninstall", "transfer", "delete", "inventory", "collect"}

func (a *app) jobCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Create jobs, signed by an administrator, and follow them"}
	cmd.AddCommand(a.jobCreateCmd(), a.jobSubmitCmd(), a.jobLsCmd(), a.jobShowCmd(), a.jobStatusCmd(), a.jobCancelCmd(), a.jobRetryCmd(), a.jobFilesCmd())
	return cmd
}

type jobFlags struct {
	typ, command, signKey, adminCert, out, window string
	pkg, script, needOS, needArch, minFree        string
	reinstall                                     bool
	timeout, expires, notBefore, spread           time.Duration
	targets                                       []string
	paths                                         []string // for collect
	maxSize                                       string
	// resolve finds a package known to the local daemon.
	resolve func(ref string) (api.Package, error)
}

func (a *app) jobCreateCmd() *cobra.Command {
	var f jobFlags
	cmd := &cobra.Command{
		Use:   "create --type run --command CMD --target SELECTOR... --sign-key KEY",
		Short: "Sign a job with an administrator's key and send it down the tree",
		Long: `create signs a job manifest with the administrator's key (KEY, its
certificate KEY.cert beside it) on this machine and submits it to the
managing node of --home, which sends it to its subtree. With --out, the
signed manifest is written to a file instead, for 'swdist job submit'.

Targets combine as AND: all, site=S, group=G, role=client|relay,
peer=P1,P2, subtree=P.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, m, err := f.sign()
			if err != nil {
				return err
			}
			if f.out != "" {
				if err := os.WriteFile(f.out, raw, 0o644); err != nil {
					return fmt.Errorf("write manifest: %w", err)
				}
				res := api.JobCreated{ID: m.JobID, Seq: m.Seq, Targets: strings.Fields(m.Target.String())}
				return a.emit(res, func(w io.Writer) {
					fmt.Fprintf(w, "Signed job %s (seq %d) into %s; submit it with 'swdist job submit %s' on a managing node.\n", m.JobID, m.Seq, f.out, f.out)
				})
			}
			return a.submit(raw)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.typ, "type", "", "job type: "+strings.Join(jobTypes, ", ")+" (required)")
	fl.StringVar(&f.command, "command", "", "for --type run: the command line to run")
	fl.StringVar(&f.pkg, "package", "", "for --type install, transfer and delete: NAME@VERSION or the package's root CID (see 'swdist package ls'); for uninstall: NAME or NAME@VERSION")
	fl.StringVar(&f.script, "script", "", "for --type install: a command run in the unpacked package, if it fails nothing is installed; for uninstall: run before the files go")
	fl.BoolVar(&f.reinstall, "reinstall", false, "for --type install: install again where this version is already installed (default: skip)")
	fl.StringVar(&f.needOS, "require-os", "", "for --type install: only on this OS (linux, ...); elsewhere the job is skipped")
	fl.StringVar(&f.needArch, "require-arch", "", "for --type install: only on this architecture (amd64, arm64, ...); elsewhere skipped")
	fl.StringVar(&f.minFree, "min-free", "", "for --type install: only where this much disk stays free beyond the package (e.g. 2G); elsewhere skipped")
	f.resolve = func(ref string) (api.Package, error) {
		return call(a, func(c *api.Client, ctx context.Context) (api.Package, error) { return c.FindPackage(ctx, ref) })
	}
	fl.DurationVar(&f.timeout, "timeout", 10*time.Minute, "for --type run and install: how long the command or script may run")
	fl.StringArrayVar(&f.paths, "path", nil, "for --type collect: an absolute path or glob pattern (*, ?, [...]) of files to collect from each target; a directory is collected whole; repeatable")
	fl.StringVar(&f.maxSize, "max-size", "", "for --type collect: the most each target may collect (default 64M); a target whose paths match more fails and collects nothing")
	fl.StringArrayVar(&f.targets, "target", nil, "which nodes: all, site=S, group=G, role=R, peer=P1,P2, subtree=P; repeatable, combined as AND (required)")
	fl.StringVar(&f.signKey, "sign-key", "", "the administrator's private key (required)")
	fl.StringVar(&f.adminCert, "admin-cert", "", "the administrator's certificate (default KEY.cert)")
	fl.DurationVar(&f.expires, "expires", 24*time.Hour, "the job expires this long after it is created")
	fl.DurationVar(&f.notBefore, "not-before", 0, "the job may start only this long after it is created")
	fl.DurationVar(&f.spread, "spread", 0, "start each destination at a random moment within this long after not-before (so 10,000 clients don't start at once)")
	fl.StringVar(&f.window, "window", "", "start only within this daily maintenance window, HH:MM-HH:MM in each machine's local time (e.g. 22:00-04:30)")
	fl.StringVar(&f.out, "out", "", "write the signed manifest to this file instead of submitting it")
	return cmd
}

// sign builds and signs the manifest described by the flags.
func (f jobFlags) sign() ([]byte, gossip.Manifest, error) {
	var m gossip.Manifest
	switch f.typ {
	case "":
		return nil, m, usagef("--type is required: %s", strings.Join(jobTypes, ", "))
	case "run":
		if strings.TrimSpace(f.command) == "" {
			return nil, m, usagef("--type run needs --command")
		}
		m.Params = map[string]string{"command": f.command, "timeout": f.timeout.String()}
	case "collect":
		if err := node.CollectPaths(f.paths); err != nil {
			return nil, m, usagef("--type collect --path: %v", err)
		}
		paths, _ := json.Marshal(f.paths)
		m.Params = map[string]string{node.ParamPaths: string(paths)}
		if f.maxSize != "" {
			if v, ok := inventory.ParseNumber(f.maxSize); !ok || v <= 0 {
				return nil, m, usagef("--max-size %q: a size like 10M or 1G", f.maxSize)
			}
			m.Params[node.ParamMaxSize] = f.maxSize
		}
	case "inventory":
		// Each target collects its inventory now and reports what changed.
	case "uninstall":
		name, version, _ := strings.Cut(f.pkg, "@")
		if name == "" {
			return nil, m, usagef("--type uninstall needs --package NAME (every version) or NAME@VERSION")
		}
		m.Params = map[string]string{"name": name, "version": version, "timeout": f.timeout.String()}
		if f.script != "" {
			m.Params["script"] = f.script
		}
	case "transfer", "delete":
		if f.pkg == "" {
			return nil, m, usagef("--type %s needs --package NAME@VERSION or a package's CID (see 'swdist package ls')", f.typ)
		}
		p, err := f.resolve(f.pkg)
		if err != nil {
			return nil, m, err
		}
		m.Package = &gossip.Package{CID: p.CID, Size: p.StoredBytes}
		m.Params = map[string]string{"name": p.Name, "version": p.Version}
	case "install":
		if f.pkg == "" {
			return nil, m, usagef("--type install needs --package NAME@VERSION or a package's CID (see 'swdist package ls')")
		}
		p, err := f.resolve(f.pkg)
		if err != nil {
			return nil, m, err
		}
		m.Package = &gossip.Package{CID: p.CID, Size: p.StoredBytes}
		m.Params = map[string]string{"name": p.Name, "version": p.Version, "timeout": f.timeout.String()}
		if f.script != "" {
			m.Params["script"] = f.script
		}
		if f.reinstall {
			m.Params["if_installed"] = "reinstall"
		}
		for k, v := range map[string]string{"os": f.needOS, "arch": f.needArch, "min_free": f.minFree} {
			if v != "" {
				m.Params[k] = v
			}
		}
		if _, ok := inventory.ParseNumber(f.minFree); f.minFree != "" && !ok {
			return nil, m, usagef("--min-free %q: a size like 500M or 2G", f.minFree)
		}
	default:
		return nil, m, usagef("--type %q is not available yet; available: %s", f.typ, strings.Join(jobTypes, ", "))
	}
	if f.signKey == "" {
		return nil, m, usagef("--sign-key is required: the administrator's key from 'swdist admin keygen'")
	}
	sel, err := gossip.ParseSelector(f.targets)
	if err != nil {
		return nil, m, usageError{err}
	}
	if f.expires <= f.notBefore {
		return nil, m, usagef("--expires %s must be after --not-before %s", f.expires, f.notBefore)
	}
	if f.spread < 0 || f.spread >= f.expires-f.notBefore {
		return nil, m, usagef("--spread %s must be shorter than the time between --not-before and --expires (%s)", f.spread, f.expires-f.notBefore)
	}
	if f.spread > 0 || f.window != "" {
		if m.Params == nil {
			m.Params = map[string]string{}
		}
		if f.spread > 0 {
			m.Params[job.ParamSpread] = f.spread.String()
		}
		if f.window != "" {
			if _, err := job.ParseWindow(f.window); err != nil {
				return nil, m, usageError{err}
			}
			m.Params[job.ParamWindow] = f.window
		}
	}
	now := time.Now().Truncate(time.Second)
	m.Type, m.Target = f.typ, sel
	m.NotBefore, m.ExpiresAt = now.Add(f.notBefore), now.Add(f.expires)
	return signManifest(m, f.signKey, f.adminCert)
}

// signManifest gives m a new job ID, the administrator's next sequence
// number and the creation time, and signs it with the key at signKey (its
// certificate at adminCert, default signKey.cert).
func signManifest(m gossip.Manifest, signKey, adminCert string) ([]byte, gossip.Manifest, error) {
	if signKey == "" {
		return nil, m, usagef("--sign-key is required: the administrator's key from 'swdist admin keygen'")
	}
	key, err := home.ReadKey(signKey)
	if err != nil {
		return nil, m, err
	}
	if adminCert == "" {
		adminCert = signKey + ".cert"
	}
	adm, err := node.ReadAdminCert(adminCert)
	if err != nil {
		return nil, m, err
	}
	seq, err := nextSeq(signKey + ".seq")
	if err != nil {
		return nil, m, err
	}
	m.JobID, m.Seq, m.CreatedAt = gossip.NewJobID(), seq, time.Now().Truncate(time.Second)
	s, err := gossip.Sign(m, key, adm)
	if err != nil {
		return nil, m, err
	}
	raw, err := gossip.Encode(s)
	return raw, m, err
}

// nextSeq returns the administrator's next sequence number, kept beside the
// key. It never goes below the current time in milliseconds, so a lost
// file does not make an old number come back.
func nextSeq(path string) (uint64, error) {
	var last uint64
	if data, err := os.ReadFile(path); err == nil {
		last, _ = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	}
	seq := max(last+1, uint64(time.Now().UnixMilli()))
	if err := os.WriteFile(path, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("record sequence number: %w", err)
	}
	return seq, nil
}

func (a *app) submit(raw []byte) error {
	res, err := call(a, func(c *api.Client, ctx context.Context) (api.JobCreated, error) {
		return c.SubmitJob(ctx, api.JobSubmit{Manifest: raw})
	})
	if err != nil {
		return err
	}
	return a.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "Job %s (seq %d) sent to %s.\n", res.ID, res.Seq, strings.Join(res.Targets, " "))
	})
}

func (a *app) jobSubmitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "submit FILE",
		Short: "Submit a manifest signed with 'swdist job create --out'",
		Args:  args(1, "the FILE written by 'swdist job create --out'"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			raw, err := os.ReadFile(argv[0])
			if err != nil {
				return fmt.Errorf("read manifest: %w", err)
			}
			return a.submit(raw)
		},
	}
}

func (a *app) jobLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the jobs that reached this node",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			jobs, err := call(a, (*api.Client).ListJobs)
			if err != nil {
				return err
			}
			return a.emit(jobs, func(w io.Writer) {
				if len(jobs) == 0 {
					fmt.Fprintln(w, "No jobs here.")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tTYPE\tADMIN\tTARGET\tFOR THIS NODE\tSTATE\tCREATED\tEXPIRES")
				for _, j := range jobs {
					state := j.State
					if state == "expired" {
						state = "expired before it arrived: not run"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\n", j.ID, j.Type, j.Admin, j.Target, j.ForThisNode, state,
						j.CreatedAt.Local().Format(time.DateTime), j.ExpiresAt.Local().Format(time.DateTime))
				}
				tw.Flush()
			})
		},
	}
}

func (a *app) jobShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a job's manifest, its signer and the signer's scope",
		Args:  args(1, "a job ID (see 'swdist job ls')"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			d, err := call(a, func(c *api.Client, ctx context.Context) (api.JobDetail, error) { return c.ShowJob(ctx, argv[0]) })
			if err != nil {
				return err
			}
			return a.emit(d, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "id\t%s\ntype\t%s\nsequence\t%d\ntargets\t%s\ncreated\t%s\nnot before\t%s\nexpires\t%s\n",
					d.ID, d.Type, d.Seq, strings.Join(d.Targets, " "), d.CreatedAt.Format(time.RFC3339),
					d.NotBefore.Format(time.RFC3339), d.ExpiresAt.Format(time.RFC3339))
				for _, k := range slices.Sorted(maps.Keys(d.Params)) {
					fmt.Fprintf(tw, "%s\t%s\n", k, d.Params[k])
				}
				fmt.Fprintf(tw, "signed by\t%s\nadmin scope\tsubtree of %s\ncertified by\t%s\n", d.Admin, d.AdminScope, d.AdminIssuer)
				tw.Flush()
			})
		},
	}
}

func (a *app) jobStatusCmd() *cobra.Command {
	var watch bool
	var every time.Duration
	var peerQ string
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Where each destination of a job stands, per state and per subtree",
		Long: `status counts the destinations of a job by state, as reported up to this
node, against the destinations it expects from its view of its subtree:
those that have not reported yet are "not reported". Then the same per
child subtree (which hop is slow), then each failure with its reason.

With --peer, one destination: its state, reason and exit code, the tail of
its command's or script's output (kept for every run that ended, succeeded
or failed), and each state it went through.`,
		Args: args(1, "a job ID (see 'swdist job ls')"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if cmd.Flags().Changed("peer") {
				if watch {
					return usagef("--peer and --watch: watch the whole job, or ask for one destination")
				}
				d, err := call(a, func(c *api.Client, ctx context.Context) (api.DestStatus, error) {
					return c.JobDestination(ctx, argv[0], peerQ)
				})
				if err != nil {
					return err
				}
				return a.emit(d, func(w io.Writer) { printDestStatus(w, d) })
			}
			if watch {
				if every < 100*time.Millisecond {
					return usagef("--every %s: at least 100ms", every)
				}
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return a.watchJob(ctx, argv[0], every)
			}
			st, err := call(a, func(c *api.Client, ctx context.Context) (api.JobStatus, error) {
				return c.JobStatus(ctx, argv[0], false)
			})
			if err != nil {
				return err
			}
			return a.emit(st, func(w io.Writer) { printJobStatus(w, st) })
		},
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw until every destination is done (progress bars on a terminal; a JSON document per change with --json); exits 1 if any failed")
	cmd.Flags().DurationVar(&every, "every", time.Second, "with --watch, how often to ask")
	cmd.Flags().StringVar(&peerQ, "peer", "", "show one destination (its peer ID, or a unique part of it) with its output tail and history")
	return cmd
}

func printDestStatus(w io.Writer, d api.DestStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\ndestination\t%s\nstate\t%s\n", d.JobID, d.PeerID, d.State)
	if !d.At.IsZero() {
		fmt.Fprintf(tw, "since\t%s (%s)\n", d.At.Local().Format(time.DateTime), ago(d.At))
	}
	if d.Total > 0 {
		fmt.Fprintf(tw, "fetched\t%s\n", fetchText(api.FetchBytes{Destinations: 1, Held: d.Held, Total: d.Total}))
	}
	if d.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", d.Reason)
	}
	if d.Exit != 0 {
		fmt.Fprintf(tw, "exit code\t%d\n", d.Exit)
	}
	if d.Via != "" {
		fmt.Fprintf(tw, "reported via\t%s\n", d.Via)
	}
	tw.Flush()
	if len(d.History) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, h := range d.History {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", h.At.Local().Format("2006-01-02 15:04:05.000"), h.State, h.Reason)
		}
		tw.Flush()
	}
	switch {
	case d.Output != "":
		fmt.Fprintln(w, "\nOutput (tail):")
		fmt.Fprint(w, d.Output)
		if !strings.HasSuffix(d.Output, "\n") {
			fmt.Fprintln(w)
		}
	case job.Final(d.State):
		fmt.Fprintln(w, "\nNo output.")
	}
}

func printJobStatus(w io.Writer, st api.JobStatus) {
	fmt.Fprintf(w, "Job %s: %d destinations, %.0f%% done\n\n", st.ID, st.Expected, st.DonePercent)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tDESTINATIONS")
	for _, k := range slices.Sorted(maps.Keys(st.Counts)) {
		if k == job.Fetching && st.Fetching != nil {
			fmt.Fprintf(tw, "%s\t%d\t(%s)\n", k, st.Counts[k], fetchText(*st.Fetching))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\n", k, st.Counts[k])
	}
	tw.Flush()
	if len(st.Subtrees) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBTREE OF\tEXPECTED\tSTATES")
		for _, ss := range st.Subtrees {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", short(ss.PeerID), ss.Expected, countsText(ss.Counts, ss.Fetching))
		}
		tw.Flush()
	}
	if len(st.Skipped) > 0 {
		fmt.Fprintln(w, "\nSkipped:")
		for _, f := range st.Skipped {
			fmt.Fprintf(w, "  %s  %s\n", f.PeerID, f.Reason)
		}
	}
	if len(st.Failed) > 0 {
		fmt.Fprintln(w, "\nFailed:")
		for _, f := range st.Failed {
			fmt.Fprintf(w, "  %s  %s\n", f.PeerID, f.Reason)
			if out := strings.TrimSpace(f.Output); out != "" {
				lines := strings.Split(out, "\n")
				for _, l := range lines[max(0, len(lines)-5):] {
					fmt.Fprintf(w, "      %s\n", l)
				}
			}
		}
		fmt.Fprintf(w, "\nA destination's whole output tail and history: swdist job status %s --peer PEER\n", st.ID)
	}
}

// fetchText is how far fetching destinations got: "3.1 MiB of 10.0 MiB, 31%".
func fetchText(f api.FetchBytes) string {
	pct := 0.0
	if f.Total > 0 {
		pct = float64(f.Held) * 100 / float64(f.Total)
	}
	return fmt.Sprintf("%s of %s, %.0f%%", job.Bytes(f.Held), job.Bytes(f.Total), pct)
}

// countsText is counts by state in one line, the fetching ones with their
// bytes: "fetching 2 (1.0 MiB of 4.0 MiB, 25%), succeeded 3".
func countsText(counts map[string]int, fetching *api.FetchBytes) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		part := fmt.Sprintf("%s %d", k, counts[k])
		if k == job.Fetching && fetching != nil {
			part += " (" + fetchText(*fetching) + ")"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// jobToAct is the job that cancel or retry acts on: not a cancel itself.
func (a *app) jobToAct(id, verb string) (api.JobDetail, error) {
	d, err := call(a, func(c *api.Client, ctx context.Context) (api.JobDetail, error) { return c.ShowJob(ctx, id) })
	if err == nil && d.Type == gossip.TypeCancel {
		err = usagef("%s is a cancel: there is nothing to %s", d.ID, verb)
	}
	return d, err
}

func (a *app) jobCancelCmd() *cobra.Command {
	var signKey, adminCert string
	cmd := &cobra.Command{
		Use:   "cancel ID --sign-key KEY",
		Short: "Stop a job wherever it has not started yet",
		Long: `cancel signs a "cancel" manifest for the job with the administrator's key and
sends it down the tree to the job's targets. Where the job has not started
(waiting for its time, its window or its turn, or not arrived yet), it ends
as "cancelled"; where it runs or ran, it goes on. The canceller's scope must
cover the scope of the administrator who signed the job.`,
		Args: args(1, "a job ID (see 'swdist job ls')"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			d, err := a.jobToAct(argv[0], "cancel")
			if err != nil {
				return err
			}
			if !time.Now().Before(d.ExpiresAt) {
				return fmt.Errorf("job %s expired at %s: there is nothing left to cancel", d.ID, d.ExpiresAt.Format(time.RFC3339))
			}
			sel, err := gossip.ParseSelector(d.Targets)
			if err != nil {
				return err
			}
			raw, _, err := signManifest(gossip.Manifest{Type: gossip.TypeCancel, Params: map[string]string{gossip.ParamJob: d.ID},
				Target: sel, NotBefore: time.Now().Truncate(time.Second), ExpiresAt: d.ExpiresAt}, signKey, adminCert)
			if err != nil {
				return err
			}
			return a.submit(raw)
		},
	}
	cmd.Flags().StringVar(&signKey, "sign-key", "", "the administrator's private key (required)")
	cmd.Flags().StringVar(&adminCert, "admin-cert", "", "the administrator's certificate (default KEY.cert)")
	return cmd
}

func (a *app) jobRetryCmd() *cobra.Command {
	var signKey, adminCert string
	var peers []string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "retry ID --sign-key KEY [--failed | --peer P...]",
		Short: "Run a job again on its failed destinations (or the ones named)",
		Long: `retry signs a new job with the same type and parameters as job ID, targeted at
the destinations where it failed (as this node's 'job status' shows them), or
at the peers named with --peer, and sends it. It prints the new job's ID;
its status is its own.`,
		Args: args(1, "a job ID (see 'swdist job ls')"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			d, err := a.jobToAct(argv[0], "retry")
			if err != nil {
				return err
			}
			if failed, _ := cmd.Flags().GetBool("failed"); len(peers) == 0 || (failed && cmd.Flags().Changed("failed")) {
				st, err := call(a, func(c *api.Client, ctx context.Context) (api.JobStatus, error) { return c.JobStatus(ctx, d.ID, false) })
				if err != nil {
					return err
				}
				for _, f := range st.Failed {
					peers = append(peers, f.PeerID)
				}
				if len(peers) == 0 {
					return fmt.Errorf("job %s failed nowhere (as far as this node knows): name destinations with --peer", d.ID)
				}
			}
			params := maps.Clone(d.Params)
			if params == nil {
				params = map[string]string{}
			}
			params["retry_of"] = d.ID
			sel, err := gossip.ParseSelector([]string{"peer=" + strings.Join(peers, ",")})
			if err != nil {
				return usageError{err}
			}
			now := time.Now().Truncate(time.Second)
			m := gossip.Manifest{Type: d.Type, Params: params, Target: sel, NotBefore: now, ExpiresAt: now.Add(expires)}
			if d.PackageCID != "" {
				m.Package = &gossip.Package{CID: d.PackageCID, Size: d.PackageSize}
			}
			raw, _, err := signManifest(m, signKey, adminCert)
			if err != nil {
				return err
			}
			return a.submit(raw)
		},
	}
	cmd.Flags().StringVar(&signKey, "sign-key", "", "the administrator's private key (required)")
	cmd.Flags().StringVar(&adminCert, "admin-cert", "", "the administrator's certificate (default KEY.cert)")
	cmd.Flags().StringArrayVar(&peers, "peer", nil, "retry on this peer (repeatable; default: every destination that failed)")
	cmd.Flags().Bool("failed", true, "retry on every destination that failed (the default without --peer; with it, as well as those named)")
	cmd.Flags().DurationVar(&expires, "expires", 24*time.Hour, "the retry expires this long after it is created")
	return cmd
}
