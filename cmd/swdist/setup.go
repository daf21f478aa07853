package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/config"
	"github.com/swdist/swdist/node/store"
)

type setupResult struct {
	PeerID string   `json:"peer_id"`
	Role   string   `json:"role"`
	Site   string   `json:"site"`
	Parent string   `json:"parent"`
	Groups []string `json:"groups"`
	Org    string   `json:"org"`
	Home   string   `json:"home"`
}

func resultOf(c cert.Cert, dir string) setupResult {
	r := setupResult{PeerID: c.PeerID.String(), Role: string(c.Role), Site: c.Site, Groups: c.Groups, Org: c.Org.String(), Home: dir}
	if c.Parent != "" {
		r.Parent = c.Parent.String()
	}
	if r.Groups == nil {
		r.Groups = []string{}
	}
	return r
}

func (a *app) initCmd() *cobra.Command {
	var role, site string
	var listen, groups []string
	var lifetime time.Duration
	cmd := &cobra.Command{
		Use:   "init --role server|relay --site SITE",
		Short: "Create a new organisation with this node as its root",
		Long: `init creates a new organisation: this node's key, the organisation root key
(keys/root.pem: keep it safe, it is the root of all trust), the node's
certificate and config.toml. A relay created by init is a department server:
the managing server of its own system.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := cert.ParseRole(role)
			if err != nil || r == cert.RoleClient {
				return usagef("--role %q: init creates a root, use server or relay (a client joins with 'swdist join TOKEN')", role)
			}
			if site == "" {
				return usagef("--site is required: the name of this node's site, like hq")
			}
			h, err := a.home()
			if err != nil {
				return err
			}
			c, err := node.Init(h, node.InitOptions{Role: r, Site: site, Groups: groups, Listen: listen, CertLifetime: lifetime})
			if err != nil {
				return err
			}
			return a.emit(resultOf(c, h.Dir), func(w io.Writer) {
				fmt.Fprintf(w, "Created organisation %s with root %s %s at site %s in %s.\n", c.Org, c.Role, c.PeerID, c.Site, h.Dir)
				fmt.Fprintf(w, "The organisation root key is %s: keep it safe.\n", h.RootKey())
				fmt.Fprintf(w, "Next: start the node with 'swdist run --home %s', then enroll nodes with 'swdist token create'.\n", h.Dir)
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "server, or relay for a department server (required)")
	cmd.Flags().StringVar(&site, "site", "", "this node's site (required)")
	cmd.Flags().StringArrayVar(&listen, "listen", nil, "listen multiaddr, repeatable; port 0 picks a free port once (default TCP and QUIC on port 7400)")
	cmd.Flags().StringArrayVar(&groups, "group", nil, "group of this node, repeatable")
	cmd.Flags().DurationVar(&lifetime, "cert-lifetime", 0, "lifetime of the certificates this organisation issues (default 720h)")
	return cmd
}

func (a *app) joinCmd() *cobra.Command {
	var listen []string
	cmd := &cobra.Command{
		Use:   "join TOKEN",
		Short: "Enroll this machine under the parent named in TOKEN",
		Long: `join redeems a one-time token made by 'swdist token create': it connects to
the parent, receives this node's certificate and writes the node's home.
Nothing is written if the parent refuses.`,
		Args: args(1, "the TOKEN printed by 'swdist token create'"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			h, err := a.home()
			if err != nil {
				return err
			}
			c, err := node.Join(cmd.Context(), h, node.JoinOptions{Token: argv[0], Listen: listen})
			if err != nil {
				return err
			}
			return a.emit(resultOf(c, h.Dir), func(w io.Writer) {
				fmt.Fprintf(w, "Enrolled %s as %s at site %s under %s.\n", c.PeerID, c.Role, c.Site, c.Parent)
				fmt.Fprintf(w, "Next: start the node with 'swdist run --home %s'.\n", h.Dir)
			})
		},
	}
	cmd.Flags().StringArrayVar(&listen, "listen", nil, "listen multiaddr, repeatable; port 0 picks a free port once (default TCP and QUIC on port 7400)")
	return cmd
}

func (a *app) runCmd() *cobra.Command {
	var db string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node daemon until interrupted",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := a.home()
			if err != nil {
				return err
			}
			cfg, err := config.Load(h.Config())
			if err != nil {
				if !h.Initialised() {
					return fmt.Errorf("%s holds no node: create one with 'swdist init' or 'swdist join TOKEN' (or pass --home)", h.Dir)
				}
				return err
			}
			logFile, err := os.OpenFile(filepath.Join(h.Logs(), "swdist.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("open log: %w", err)
			}
			defer logFile.Close()
			var level slog.Level
			_ = level.UnmarshalText([]byte(cfg.Log.Level))
			log := slog.New(slog.NewTextHandler(io.MultiWriter(a.errOut, logFile), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if db != "" && !store.IsPostgres(db) {
				if err := store.CheckDSN(db); err != nil {
					return usagef("--db: %v", err)
				}
				if db, err = filepath.Abs(store.SQLitePath(db)); err != nil { // a file named here is where the shell is
					return err
				}
			}
			n, err := node.Open(ctx, h, node.Options{Logger: log, DB: db})
			if err != nil {
				return err
			}
			if err := n.Run(ctx); err != nil {
				return err
			}
			log.Info("node stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&db, "db", "", "the database: a SQLite file (PATH or sqlite:PATH) or a postgres://USER@HOST/DB URL (default the config's db, by default swdist.db in the home)")
	return cmd
}
