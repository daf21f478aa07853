// Package config is a node's config.toml: its fields, their defaults
// (applied in one place, Defaults), and strict loading that names the file,
// the line and the problem.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/pelletier/go-toml/v2"

	"github.com/swdist/swdist/hierarchy/cert"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/job"
	"github.com/swdist/swdist/node/store"
)

// Config is the content of config.toml. Keys and certificates are never
// here: they live under keys/ and in cert.
type Config struct {
	Role   string   `toml:"role" comment:"server, relay or client; set by init or join"`
	Site   string   `toml:"site"`
	Groups []string `toml:"groups"`
	// Listen addresses: TCP and QUIC only, the transports the tree uses.
	Listen []string `toml:"listen"`
	// DB is the node's database: a SQLite file (relative to the home) or
	// a postgres:// URL.
	DB        string    `toml:"db" comment:"the database: a SQLite file in the home, or postgres://USER@HOST/DB"`
	Parent    Parent    `toml:"parent"`
	Limits    Limits    `toml:"limits"`
	Enroll    Enroll    `toml:"enroll"`
	Tree      Tree      `toml:"tree"`
	Inventory Inventory `toml:"inventory"`
	Jobs      Jobs      `toml:"jobs"`
	Blocks    Blocks    `toml:"blocks"`
	WAN       WAN       `toml:"wan"`
	Log       Log       `toml:"log"`
}

// Blocks configures the block store.
type Blocks struct {
	// Budget is the disk the block store may use ("20G"; "0": no budget).
	// Above it, the blocks of packages that no live job pins and no
	// installed software needs are removed, oldest package first.
	Budget Size `toml:"budget"`
	// GCEvery is how often the budget is checked, besides after each
	// package fetched.
	GCEvery Duration `toml:"gc_every"`
}

// WAN paces this node's traffic over its uplink.
type WAN struct {
	// Rate bounds the bytes per second this node fetches from its parent
	// and ancestors: a relay's prefetch and the blocks it pulls through
	// for its children ("2M" is 2 MiB/s; "0": no limit).
	Rate Size `toml:"rate"`
	// Window, if set ("08:00-18:00", local time), is when Rate is in
	// force; outside it fetches are not limited.
	Window string `toml:"window"`
	// FallbackRate bounds the bytes per second this node serves, all
	// together, to nodes below its children that fetch from it because
	// their own relay is down ("0": no limit).
	FallbackRate Size `toml:"fallback_rate"`
}

// Size is a number of bytes written as "0", "512K", "20G" or "2.5MB"
// (K M G T are powers of 1024, KB MB GB TB of 1000).
type Size struct {
	Bytes int64
	set   bool
}

// SizeOf is n bytes, as if written in the file.
func SizeOf(n int64) Size { return Size{Bytes: n, set: true} }

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(s.Bytes, 10)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, ok := inventory.ParseNumber(string(b))
	if !ok || v < 0 {
		return fmt.Errorf("size %q: use a number of bytes with an optional unit, like 0, 512K, 20G or 2.5MB", b)
	}
	*s = Size{Bytes: int64(v), set: true}
	return nil
}

// Jobs configures how this machine runs jobs.
type Jobs struct {
	// MaxConcurrent jobs run at once; the others wait their turn.
	MaxConcurrent int `toml:"max_concurrent"`
	// InstallRoot is where install jobs put packages, as NAME/VERSION; a
	// relative path is under the node's home.
	InstallRoot string `toml:"install_root"`
}

// Inventory configures this machine's inventory collection.
type Inventory struct {
	// Every is the interval between collections, jittered by ±10 %.
	Every Duration `toml:"every"`
	// FullEvery: a full inventory goes up at least this often; between
	// them only what changed.
	FullEvery Duration `toml:"full_every"`
	// Timeout bounds each collector (a hung mount, a slow dpkg).
	Timeout Duration `toml:"timeout"`
}

// Parent is where this node's parent is; empty on the root.
type Parent struct {
	ID    string   `toml:"id"`
	Addrs []string `toml:"addrs"`
}

// Limits size the libp2p host. Zero means the default for the role.
type Limits struct {
	// MaxConns is how many connections the resource manager admits.
	MaxConns int `toml:"max_conns"`
	// ConnLow and ConnHigh are the connection manager's watermarks: above
	// high it trims unprotected connections down to low. Parent and
	// children are protected and never trimmed.
	ConnLow  int `toml:"conn_low"`
	ConnHigh int `toml:"conn_high"`
}

// Enroll configures what this node issues to its children.
type Enroll struct {
	CertLifetime Duration `toml:"cert_lifetime"`
	TokenTTL     Duration `toml:"token_ttl"`
}

// Tree configures the link to the parent and membership checks.
type Tree struct {
	ReconnectMin Duration `toml:"reconnect_min"`
	ReconnectMax Duration `toml:"reconnect_max"`
	HelloTimeout Duration `toml:"hello_timeout"`
	// CatchUpEvery is how often, on average, a node asks its parent for
	// manifests it may have missed (besides at every reconnection).
	CatchUpEvery Duration `toml:"catch_up_every"`
}

// Log configures logging.
type Log struct {
	Level string `toml:"level" comment:"debug, info, warn or error"`
}

// Duration is a time.Duration written as "30s", "2m", "720h".
type Duration struct{ time.Duration }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: use a number and a unit, like 30s, 5m or 720h", b)
	}
	d.Duration = v
	return nil
}

// Defaults fills every zero field with its default for the role. It is the
// only place defaults are set.
func (c *Config) Defaults() {
	issuer := c.Role == string(cert.RoleServer) || c.Role == string(cert.RoleRelay)
	if len(c.Listen) == 0 {
		c.Listen = []string{"/ip4/0.0.0.0/tcp/7400", "/ip4/0.0.0.0/udp/7400/quic-v1"}
	}
	if c.Limits.MaxConns == 0 {
		c.Limits.MaxConns = 256
		if issuer {
			// Children are one connection each (two while both sides dial);
			// 2,000 children must fit with room for siblings and peers.
			c.Limits.MaxConns = 8192
		}
	}
	if c.Limits.ConnHigh == 0 {
		c.Limits.ConnHigh = c.Limits.MaxConns * 3 / 4
	}
	if c.Limits.ConnLow == 0 {
		c.Limits.ConnLow = c.Limits.ConnHigh * 3 / 4
	}
	if c.Enroll.CertLifetime.Duration == 0 {
		c.Enroll.CertLifetime.Duration = 30 * 24 * time.Hour
	}
	if c.Enroll.TokenTTL.Duration == 0 {
		c.Enroll.TokenTTL.Duration = 24 * time.Hour
	}
	if c.Tree.ReconnectMin.Duration == 0 {
		c.Tree.ReconnectMin.Duration = time.Second
	}
	if c.Tree.ReconnectMax.Duration == 0 {
		c.Tree.ReconnectMax.Duration = 2 * time.Minute
	}
	if c.Tree.HelloTimeout.Duration == 0 {
		c.Tree.HelloTimeout.Duration = 10 * time.Second
	}
	if c.Tree.CatchUpEvery.Duration == 0 {
		c.Tree.CatchUpEvery.Duration = time.Minute
	}
	if c.Inventory.Every.Duration == 0 {
		c.Inventory.Every.Duration = 24 * time.Hour
	}
	if c.Inventory.FullEvery.Duration == 0 {
		c.Inventory.FullEvery.Duration = 7 * 24 * time.Hour
	}
	if c.Inventory.Timeout.Duration == 0 {
		c.Inventory.Timeout.Duration = 30 * time.Second
	}
	if c.Jobs.MaxConcurrent == 0 {
		c.Jobs.MaxConcurrent = 2
	}
	if c.Jobs.InstallRoot == "" {
		c.Jobs.InstallRoot = "installed"
	}
	if c.DB == "" {
		c.DB = "swdist.db"
	}
	if !c.Blocks.Budget.set {
		c.Blocks.Budget = SizeOf(0)
	}
	if c.Blocks.GCEvery.Duration == 0 {
		c.Blocks.GCEvery.Duration = 10 * time.Minute
	}
	if !c.WAN.Rate.set {
		c.WAN.Rate = SizeOf(0)
	}
	if !c.WAN.FallbackRate.set {
		c.WAN.FallbackRate = SizeOf(1 << 20)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
}

// Validate checks a config with defaults applied.
func (c *Config) Validate() error {
	role, err := cert.ParseRole(c.Role)
	if err != nil {
		return fmt.Errorf("role: %w", err)
	}
	if c.Site == "" {
		return errors.New("site is empty: set site = \"...\"")
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("listen address %q: %w", a, err)
		}
	}
	switch {
	case c.Parent.ID == "" && role == cert.RoleClient:
		return errors.New("a client needs a parent: enroll it with 'swdist join TOKEN'")
	case c.Parent.ID == "" && len(c.Parent.Addrs) > 0:
		return errors.New("parent.addrs is set but parent.id is not")
	case c.Parent.ID != "":
		if _, err := peer.Decode(c.Parent.ID); err != nil {
			return fmt.Errorf("parent.id %q: %w", c.Parent.ID, err)
		}
		for _, a := range c.Parent.Addrs {
			if _, err := ma.NewMultiaddr(a); err != nil {
				return fmt.Errorf("parent address %q: %w", a, err)
			}
		}
	}
	if c.Limits.ConnLow > c.Limits.ConnHigh || c.Limits.ConnHigh > c.Limits.MaxConns {
		return fmt.Errorf("limits: want conn_low (%d) <= conn_high (%d) <= max_conns (%d)", c.Limits.ConnLow, c.Limits.ConnHigh, c.Limits.MaxConns)
	}
	if c.Inventory.Every.Duration < time.Minute || c.Inventory.Timeout.Duration < time.Second || c.Inventory.FullEvery.Duration < c.Inventory.Every.Duration {
		return fmt.Errorf("inventory: want every >= 1m, timeout >= 1s and full_every >= every (have %s, %s, %s)",
			c.Inventory.Every.Duration, c.Inventory.Timeout.Duration, c.Inventory.FullEvery.Duration)
	}
	if err := store.CheckDSN(c.DB); err != nil {
		return fmt.Errorf("db: %w", err)
	}
	if c.Jobs.MaxConcurrent < 1 {
		return fmt.Errorf("jobs.max_concurrent %d: at least 1", c.Jobs.MaxConcurrent)
	}
	if c.WAN.Window != "" {
		if _, err := job.ParseWindow(c.WAN.Window); err != nil {
			return fmt.Errorf("wan.window: %w", err)
		}
	}
	if c.Blocks.GCEvery.Duration < time.Second {
		return fmt.Errorf("blocks.gc_every %s: at least 1s", c.Blocks.GCEvery.Duration)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: use debug, info, warn or error", c.Log.Level)
	}
	return nil
}

// Load reads, defaults and validates the config file at path. Unknown keys
// are errors: a typo must not silently fall back to a default.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var de *toml.DecodeError
		var se *toml.StrictMissingError
		switch {
		case errors.As(err, &se) && len(se.Errors) > 0:
			e := se.Errors[0]
			row, _ := e.Position()
			return Config{}, fmt.Errorf("config %s line %d: unknown key %q: check its spelling against 'swdist --help' and README.md", path, row, strings.Join(e.Key(), "."))
		case errors.As(err, &de):
			row, col := de.Position()
			return Config{}, fmt.Errorf("config %s line %d column %d: %s", path, row, col, de.Error())
		}
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Save writes c to path atomically.
func Save(path string, c Config) error {
	data, err := toml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}
