// Package home lays out a node's home directory ($SWDIST_HOME, ~/.swdist
// or --home) and reads and writes what lives there: keys (PEM, mode 0600,
// under keys/), the certificate chain, the organisation's public key.
package home

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/swdist/swdist/hierarchy/cert"
)

// Home is a node's home directory.
type Home struct{ Dir string }

// Resolve picks the home: the flag, else $SWDIST_HOME, else ~/.swdist.
func Resolve(flag string) (Home, error) {
	dir := flag
	if dir == "" {
		dir = os.Getenv("SWDIST_HOME")
	}
	if dir == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return Home{}, fmt.Errorf("find home directory: %w (set --home or SWDIST_HOME)", err)
		}
		dir = filepath.Join(h, ".swdist")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Home{}, err
	}
	return Home{Dir: abs}, nil
}

// Paths of the home's files.
func (h Home) Config() string  { return filepath.Join(h.Dir, "config.toml") }
func (h Home) NodeKey() string { return filepath.Join(h.Dir, "keys", "node.pem") }
func (h Home) RootKey() string { return filepath.Join(h.Dir, "keys", "root.pem") }
func (h Home) OrgPub() string  { return filepath.Join(h.Dir, "keys", "org.pub") }
func (h Home) Cert() string    { return filepath.Join(h.Dir, "cert") }
func (h Home) DB() string      { return filepath.Join(h.Dir, "swdist.db") }
func (h Home) Socket() string  { return filepath.Join(h.Dir, "api.sock") }
func (h Home) Logs() string    { return filepath.Join(h.Dir, "logs") }

// Blocks is the node's block store (flatfs).
func (h Home) Blocks() string { return filepath.Join(h.Dir, "blocks") }

// InventoryDir holds the operator's custom inventory fields.
func (h Home) InventoryDir() string { return filepath.Join(h.Dir, "inventory.d") }

// Initialised reports whether the home holds a node.
func (h Home) Initialised() bool {
	_, err := os.Stat(h.Config())
	return err == nil
}

// Create makes the home and its keys/ directory.
func (h Home) Create() error {
	if err := os.MkdirAll(filepath.Join(h.Dir, "keys"), 0o700); err != nil {
		return fmt.Errorf("create home %s: %w", h.Dir, err)
	}
	if err := os.MkdirAll(h.Logs(), 0o755); err != nil {
		return fmt.Errorf("create home %s: %w", h.Dir, err)
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// NewKey generates an Ed25519 key.
func NewKey() (crypto.PrivKey, error) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// WriteKey stores an Ed25519 key as PKCS#8 PEM with mode 0600.
func WriteKey(path string, k crypto.PrivKey) error {
	raw, err := k.Raw()
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.PrivateKey(raw))
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// ReadKey loads an Ed25519 key written by WriteKey. A key that others can
// read is refused: it must be mode 0600.
func ReadKey(path string) (crypto.PrivKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s has mode %04o and others can read it: run 'chmod 600 %s'", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key %s: not a PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: %T, want an Ed25519 key", path, k)
	}
	return crypto.UnmarshalEd25519PrivateKey(ek)
}

// WritePub stores a public key as PKIX PEM.
func WritePub(path string, pub crypto.PubKey) error {
	raw, err := pub.Raw()
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(raw))
	if err != nil {
		return fmt.Errorf("encode public key %s: %w", path, err)
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// ReadPub loads a public key written by WritePub.
func ReadPub(path string) (crypto.PubKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key %s: not a PEM \"PUBLIC KEY\" block", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: %T, want an Ed25519 key", path, k)
	}
	return crypto.UnmarshalEd25519PublicKey(ek)
}

const chainPEM = "SWDIST CERTIFICATE CHAIN"

// WriteChain stores the node's certificate chain.
func WriteChain(path string, ch cert.Chain) error {
	data, err := cert.EncodeChain(ch)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: chainPEM, Bytes: data}), 0o644)
}

// ReadChain loads the node's certificate chain.
func ReadChain(path string) (cert.Chain, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != chainPEM {
		return nil, fmt.Errorf("certificate %s: not a PEM %q block", path, chainPEM)
	}
	ch, err := cert.DecodeChain(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", path, err)
	}
	return ch, nil
}
