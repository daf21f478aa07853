package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
)

// Exit statuses, as DESIGN.md sets them.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// usageError marks a mistake in the command line itself.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// app holds the global flags and where output goes.
type app struct {
	homeFlag string
	json     bool
	out      io.Writer
	errOut   io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{out: stdout, errOut: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "swdist:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintln(stderr, "Run 'swdist --help' for usage.")
		return exitUsage
	}
	return exitFailed
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "swdist",
		Short: "Distribute software to many machines through a tree of relays",
		Long: `swdist pushes software to every machine of an organisation, runs jobs there and
knows what is installed where. Nodes form a tree: a managing server at the top,
relays in the middle, clients at the leaves. Every node proves its membership
with a certificate issued by its parent.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&a.homeFlag, "home", "", "node home directory (default $SWDIST_HOME or ~/.swdist)")
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print machine-readable JSON")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.initCmd(), a.joinCmd(), a.runCmd(), a.tokenCmd(), a.idCmd(), a.peersCmd(),
		a.treeCmd(), a.nodeCmd(), a.adminCmd(), a.jobCmd(), a.packageCmd(), a.inventoryCmd(), a.statsCmd(), a.demoCmd())
	return root
}

// args checks the count of positional arguments as a usage error.
func args(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		if len(got) != n {
			if n == 0 {
				return usagef("%s takes no arguments, got %q", cmd.CommandPath(), got)
			}
			return usagef("%s needs %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

func (a *app) home() (home.Home, error) { return home.Resolve(a.homeFlag) }

// client returns a control API client for the node in the home.
func (a *app) client() (*api.Client, home.Home, error) {
	h, err := a.home()
	if err != nil {
		return nil, h, err
	}
	if !h.Initialised() {
		return nil, h, fmt.Errorf("%s holds no node: create one with 'swdist init' or 'swdist join TOKEN' (or pass --home)", h.Dir)
	}
	return api.NewClient(h.Socket()), h, nil
}

// daemonErr explains a failed API call.
func daemonErr(h home.Home, err error) error {
	if errors.Is(err, api.ErrNotRunning) {
		return fmt.Errorf("the swdist daemon for %s is not running: start it with 'swdist run --home %s'", h.Dir, h.Dir)
	}
	return err
}

// call runs f against the daemon of the home, bounded in time, and turns a
// daemon that is not running into a message that says what to do.
func call[T any](a *app, f func(*api.Client, context.Context) (T, error)) (T, error) {
	return callFor(a, time.Minute, f)
}

// callFor is call with another bound in time, for long operations.
func callFor[T any](a *app, limit time.Duration, f func(*api.Client, context.Context) (T, error)) (T, error) {
	var zero T
	c, h, err := a.client()
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	v, err := f(c, ctx)
	if err != nil {
		return zero, daemonErr(h, err)
	}
	return v, nil
}

// emit prints v as JSON with --json, else calls human.
func (a *app) emit(v any, human func(w io.Writer)) error {
	if a.json {
		enc := json.NewEncoder(a.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(a.out)
	return nil
}

// short shortens a peer ID for tables: its tail is what tells IDs apart.
func short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return "…" + id[len(id)-10:]
}

func ago(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
