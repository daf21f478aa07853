package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/swdist/swdist/node/api"
	"github.com/swdist/swdist/node/home"
)

func (a *app) adminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Administrator keys: make them, and certify them on a managing node"}
	var out string
	keygen := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make an administrator's signing key: FILE (private, 0600) and FILE.pub",
		Long: `keygen makes an Ed25519 key pair on the administrator's own machine. The
private key FILE signs jobs and never has to leave this machine; give
FILE.pub to the operator of a managing node, who certifies it with
'swdist admin add'. Save the certificate you get back as FILE.cert.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out FILE is required")
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists: refusing to overwrite a key", out)
			}
			k, err := home.NewKey()
			if err != nil {
				return err
			}
			if err := home.WriteKey(out, k); err != nil {
				return err
			}
			if err := home.WritePub(out+".pub", k.GetPublic()); err != nil {
				return err
			}
			res := map[string]string{"key": out, "pubkey": out + ".pub"}
			return a.emit(res, func(w io.Writer) {
				fmt.Fprintf(w, "Wrote %s (private, keep it here) and %s.\nNext: on a managing node, 'swdist admin add --name NAME --pubkey %s.pub --out %s.cert'.\n", out, out+".pub", out, out)
			})
		},
	}
	keygen.Flags().StringVar(&out, "out", "", "where to write the private key (required)")

	var req api.AdminRequest
	var certOut string
	add := &cobra.Command{
		Use:   "add --name N --pubkey FILE [--scope PEER] [--out FILE]",
		Short: "Certify an administrator's key for this node's subtree",
		Long: `add certifies an administrator's public key on this managing node. The
administrator may then sign jobs for this node's subtree: the whole tree on
the root, the relay's subtree on a relay. With --scope RELAY (a relay below
this node), that relay certifies the admin for its own subtree, at this
node's request. Give the certificate (--out) to the administrator, to keep
beside the key as KEY.cert.`,
		Args: args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Name == "" {
				return usagef("--name is required")
			}
			pubFile, _ := cmd.Flags().GetString("pubkey")
			if pubFile == "" {
				return usagef("--pubkey FILE is required (made by 'swdist admin keygen')")
			}
			pub, err := os.ReadFile(pubFile)
			if err != nil {
				return fmt.Errorf("read --pubkey: %w", err)
			}
			req.PubKey = string(pub)
			res, err := call(a, func(c *api.Client, ctx context.Context) (api.AdminCert, error) { return c.CertifyAdmin(ctx, req) })
			if err != nil {
				return err
			}
			if certOut != "" {
				if err := os.WriteFile(certOut, []byte(res.Cert), 0o644); err != nil {
					return fmt.Errorf("write certificate: %w", err)
				}
			}
			return a.emit(res, func(w io.Writer) {
				if certOut == "" {
					fmt.Fprint(w, res.Cert)
				}
				fmt.Fprintf(a.errOut, "Certified %q for the subtree of %s until %s.\n", res.Name, res.Scope, res.NotAfter.Format(time.RFC3339))
			})
		},
	}
	add.Flags().StringVar(&req.Name, "name", "", "the administrator's name (required)")
	add.Flags().String("pubkey", "", "the administrator's public key file (required)")
	add.Flags().StringVar(&req.Scope, "scope", "", "subtree the administrator may target: this node's (the default), or that of an online relay below it, which then certifies the admin")
	add.Flags().StringVar(&req.Lifetime, "lifetime", "", "how long the certificate is valid (default 8760h)")
	add.Flags().StringVar(&certOut, "out", "", "write the certificate to this file instead of standard output")
	cmd.AddCommand(keygen, add)
	return cmd
}
