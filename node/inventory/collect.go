package inventory

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
	psnet "github.com/shirou/gopsutil/v4/net"
)

// A Collector gathers one part of a machine's inventory into inv. It must
// return when ctx ends; what it added before an error is kept.
type Collector interface {
	Name() string
	Collect(ctx context.Context, inv *Inventory) error
}

// An Owner is a Collector that says which fields and items of an inventory
// are its part. When it fails or times out, Collect reports its part of the
// last inventory again, so that a failure removes nothing it reported
// before. A Collector that is not an Owner loses its part when it fails.
type Owner interface {
	OwnsField(field string) bool
	OwnsItem(kind string, it Item) bool
}

// Collect runs every collector, each bounded by timeout, and returns the
// machine's inventory. last is the inventory reported before (empty if
// none). A collector that fails or hangs leaves the field "error.NAME"
// saying why, and the others' parts are reported as usual. If it is an
// Owner, its part of last is kept, overlaid with what it did gather before
// failing: while it fails its values can be added or changed but not
// removed, and its next successful collection replaces them all.
func Collect(ctx context.Context, collectors []Collector, timeout time.Duration, last Inventory) Inventory {
	var inv Inventory
	for _, c := range collectors {
		part, err := collectBounded(ctx, c, timeout)
		if o, ok := c.(Owner); ok && err != nil {
			keep(&part, last, o)
		}
		for f, v := range part.Fields {
			inv.Set(f, v)
		}
		for kind, items := range part.Items {
			for _, it := range items {
				inv.Add(kind, it)
			}
		}
		if err != nil {
			msg := err.Error()
			if len(msg) > 512 {
				msg = msg[:512]
			}
			inv.Set("error."+c.Name(), strings.ToValidUTF8(msg, "?"))
		}
	}
	return inv
}

// keep adds to part what o owns in last and part does not have.
func keep(part *Inventory, last Inventory, o Owner) {
	for f, v := range last.Fields {
		if _, ok := part.Fields[f]; !ok && o.OwnsField(f) {
			part.Set(f, v)
		}
	}
	for kind, items := range last.Items {
		for key, it := range items {
			if _, ok := part.Items[kind][key]; !ok && o.OwnsItem(kind, it) {
				part.Add(kind, maps.Clone(it))
			}
		}
	}
}

// collectBounded runs c, giving up after timeout even if c ignores its
// context (a stat on a hung network mount does): c then goes on alone,
// writing only to its own inventory, which is dropped.
func collectBounded(ctx context.Context, c Collector, timeout time.Duration) (Inventory, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		inv Inventory
		err error
	}
	done := make(chan result, 1)
	go func() {
		var part Inventory
		err := c.Collect(ctx, &part)
		done <- result{part, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() != nil {
			r.err = fmt.Errorf("timed out after %s: %w", timeout, r.err)
		}
		return r.inv, r.err
	case <-ctx.Done():
		return Inventory{}, fmt.Errorf("timed out after %s", timeout)
	}
}

// Identity is what the node knows of itself rather than what it measures.
type Identity struct {
	Role, Site, Version string
	Groups              []string
}

// System collects host, OS, CPU, memory and network interfaces with
// gopsutil, and the node's identity: what the kernel answers from memory.
// Disks, whose stat can hang on a mount, are the Disks collector's.
type System struct{ Identity Identity }

// Name implements Collector.
func (System) Name() string { return "system" }

// systemFields are the fields System sets.
var systemFields = []string{"swdist.version", "role", "site", "groups", "arch", "hostname", "os.name", "os.family",
	"os.version", "os.kind", "kernel", "boot_time", "virtualization", "cpu.count", "cpu.model", "memory.total"}

// OwnsField implements Owner.
func (System) OwnsField(f string) bool { return slices.Contains(systemFields, f) }

// OwnsItem implements Owner.
func (System) OwnsItem(kind string, _ Item) bool { return kind == "net" }

// Collect implements Collector.
func (s System) Collect(ctx context.Context, inv *Inventory) error {
	var errs []error
	inv.Set("swdist.version", s.Identity.Version)
	inv.Set("role", s.Identity.Role)
	inv.Set("site", s.Identity.Site)
	inv.Set("groups", strings.Join(s.Identity.Groups, ","))
	inv.Set("arch", runtime.GOARCH)
	if h, err := host.InfoWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("host: %w", err))
	} else {
		inv.Set("hostname", h.Hostname)
		inv.Set("os.name", h.Platform)
		inv.Set("os.family", h.PlatformFamily)
		inv.Set("os.version", h.PlatformVersion)
		inv.Set("os.kind", h.OS)
		inv.Set("kernel", h.KernelVersion)
		if h.KernelArch != "" {
			inv.Set("arch", h.KernelArch)
		}
		inv.Set("boot_time", strconv.FormatUint(h.BootTime, 10))
		if h.VirtualizationRole == "guest" {
			inv.Set("virtualization", h.VirtualizationSystem)
		}
	}
	if n, err := cpu.CountsWithContext(ctx, true); err != nil {
		errs = append(errs, fmt.Errorf("cpu count: %w", err))
	} else {
		inv.Set("cpu.count", strconv.Itoa(n))
	}
	if infos, err := cpu.InfoWithContext(ctx); err == nil && len(infos) > 0 {
		inv.Set("cpu.model", strings.TrimSpace(infos[0].ModelName))
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	} else {
		inv.Set("memory.total", strconv.FormatUint(vm.Total, 10))
	}
	if ifs, err := psnet.InterfacesWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("network interfaces: %w", err))
	} else {
		for _, i := range ifs {
			if slices.Contains(i.Flags, "loopback") {
				continue
			}
			var addrs []string
			for _, a := range i.Addrs {
				addrs = append(addrs, a.Addr)
			}
			inv.Add("net", Item{"name": i.Name, "mac": i.HardwareAddr, "addrs": strings.Join(addrs, ","), "mtu": strconv.Itoa(i.MTU)})
		}
	}
	return errors.Join(errs...)
}

// pseudo file systems are not disks.
var pseudoFS = []string{"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "overlay", "squashfs",
	"mqueue", "debugfs", "tracefs", "securityfs", "pstore", "bpf", "fusectl", "configfs", "hugetlbfs", "autofs",
	"nsfs", "ramfs", "binfmt_misc", "efivarfs", "rpc_pipefs", "fuse.lxcfs"}

// Disks lists the mounted file systems (not the pseudo ones) with their
// size and free space. Every mount is statted at once, each on its own: one
// that does not answer within MountTimeout (a hung network mount) costs
// only its own item, which Collect keeps at its last value, and an error
// naming it. Its stat goes on in the background, and later collections do
// not stat that mount again until it returns.
type Disks struct {
	// MountTimeout bounds each mount's stat (default 10 s, and at most
	// three quarters of the time the collector has left).
	MountTimeout time.Duration

	// partitions and usage replace gopsutil's in tests.
	partitions func(ctx context.Context, all bool) ([]disk.PartitionStat, error)
	usage      func(ctx context.Context, path string) (*disk.UsageStat, error)
}

// Name implements Collector.
func (Disks) Name() string { return "disks" }

// OwnsField implements Owner.
func (Disks) OwnsField(string) bool { return false }

// OwnsItem implements Owner.
func (Disks) OwnsItem(kind string, _ Item) bool { return kind == "disk" }

// statting holds the mounts whose stat has not returned yet.
var statting sync.Map // mount → struct{}

// Collect implements Collector.
func (d Disks) Collect(ctx context.Context, inv *Inventory) error {
	partitions, usage := d.partitions, d.usage
	if partitions == nil {
		partitions = disk.PartitionsWithContext
	}
	if usage == nil {
		usage = disk.UsageWithContext
	}
	parts, err := partitions(ctx, false)
	if err != nil {
		return fmt.Errorf("mounts: %w", err)
	}
	type mount struct{ mount, device, fstype string }
	var mounts []mount
	seen := map[string]bool{}
	for _, p := range parts {
		if slices.Contains(pseudoFS, p.Fstype) || seen[p.Mountpoint] {
			continue
		}
		seen[p.Mountpoint] = true
		mounts = append(mounts, mount{p.Mountpoint, p.Device, p.Fstype})
	}
	if !seen["/"] {
		// In a container the root is an overlay: still the disk that fills.
		mounts = append(mounts, mount{mount: "/"})
	}
	wait := d.MountTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)*3/4)
	}
	type result struct {
		i   int
		u   *disk.UsageStat
		err error
	}
	results := make(chan result, len(mounts))
	const (
		busy    = iota // an earlier stat has not returned
		started        // statted now
		done
	)
	state := make([]int, len(mounts))
	var errs []error
	n := 0
	for i, m := range mounts {
		if _, already := statting.LoadOrStore(m.mount, struct{}{}); already {
			continue
		}
		state[i] = started
		n++
		go func() {
			u, err := usage(ctx, m.mount)
			statting.Delete(m.mount)
			results <- result{i, u, err}
		}()
	}
	got := make([]*disk.UsageStat, len(mounts))
	timer := time.NewTimer(wait)
	defer timer.Stop()
wait:
	for ; n > 0; n-- {
		select {
		case r := <-results:
			state[r.i] = done
			if r.err == nil && r.u != nil && r.u.Total > 0 {
				got[r.i] = r.u // a mount this user may not stat is no disk of its
			}
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for i, m := range mounts {
		switch {
		case state[i] == busy:
			errs = append(errs, fmt.Errorf("%s: no answer yet to a stat started by an earlier collection (a hung mount?)", m.mount))
		case state[i] == started:
			errs = append(errs, fmt.Errorf("%s: no answer to a stat within %s (a hung mount?)", m.mount, wait.Round(time.Millisecond)))
		case got[i] != nil:
			u, fstype := got[i], m.fstype
			if fstype == "" {
				fstype = u.Fstype
			}
			inv.Add("disk", Item{"mount": m.mount, "device": m.device, "fstype": fstype,
				"size": strconv.FormatUint(u.Total, 10), "free": strconv.FormatUint(u.Free, 10),
				"used_percent": strconv.FormatFloat(u.UsedPercent, 'f', 0, 64)})
		}
	}
	return errors.Join(errs...)
}

// Packages lists the OS packages: dpkg, and rpm where present. A machine
// with neither dpkg-query nor rpm on its PATH is an error ("no package
// manager found"), even one that never had either: a machine whose package
// manager went missing must not look as if it had no packages.
type Packages struct{}

// Name implements Collector.
func (Packages) Name() string { return "packages" }

// OwnsField implements Owner.
func (Packages) OwnsField(string) bool { return false }

// OwnsItem implements Owner.
func (Packages) OwnsItem(kind string, it Item) bool {
	return kind == "software" && (it["source"] == "dpkg" || it["source"] == "rpm")
}

// ErrNoPackageManager: neither dpkg-query nor rpm is on the PATH.
var ErrNoPackageManager = errors.New("no package manager found: dpkg-query and rpm are not on PATH")

// Collect implements Collector.
func (Packages) Collect(ctx context.Context, inv *Inventory) error {
	type manager struct {
		source string
		args   []string
	}
	var errs []error
	found := false
	for _, m := range []manager{
		{"dpkg", []string{"dpkg-query", "-W", "-f", `${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n`}},
		{"rpm", []string{"rpm", "-qa", "--qf", `ii \t%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n`}},
	} {
		if _, err := exec.LookPath(m.args[0]); err != nil {
			continue
		}
		found = true
		out, err := exec.CommandContext(ctx, m.args[0], m.args[1:]...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) && len(bytes.TrimSpace(ee.Stderr)) > 0 {
				line, _, _ := strings.Cut(string(bytes.TrimSpace(ee.Stderr)), "\n")
				err = fmt.Errorf("%w: %s", err, line)
			}
			errs = append(errs, fmt.Errorf("%s: %w", m.args[0], err))
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			if len(f) != 4 || !strings.HasPrefix(f[0], "ii") || f[1] == "" {
				continue // not installed (removed, config files only)
			}
			inv.Add("software", Item{"name": f[1], "version": f[2], "arch": f[3], "source": m.source})
		}
	}
	if !found {
		return ErrNoPackageManager
	}
	return errors.Join(errs...)
}

// Installed is software that swdist's install jobs put on this machine.
type Installed struct {
	Name, Version, CID string
	At                 time.Time
}

// Swdist reports the software installed by swdist jobs.
type Swdist struct {
	List func(ctx context.Context) ([]Installed, error)
}

// Name implements Collector.
func (Swdist) Name() string { return "swdist" }

// OwnsField implements Owner.
func (Swdist) OwnsField(string) bool { return false }

// OwnsItem implements Owner.
func (Swdist) OwnsItem(kind string, it Item) bool {
	return kind == "software" && it["source"] == "swdist"
}

// Collect implements Collector.
func (s Swdist) Collect(ctx context.Context, inv *Inventory) error {
	list, err := s.List(ctx)
	if err != nil {
		return err
	}
	for _, p := range list {
		inv.Add("software", Item{"name": p.Name, "version": p.Version, "source": "swdist", "cid": p.CID,
			"installed_at": p.At.UTC().Format(time.RFC3339)})
	}
	return nil
}

// Custom reads operator-defined fields from the files in a directory
// (inventory.d in the node's home): lines "key = value", '#' comments,
// files read in name order so that a later file wins. Each key becomes the
// field "custom.KEY".
type Custom struct{ Dir string }

// Name implements Collector.
func (Custom) Name() string { return "custom" }

// OwnsField implements Owner.
func (Custom) OwnsField(f string) bool { return strings.HasPrefix(f, "custom.") }

// OwnsItem implements Owner.
func (Custom) OwnsItem(string, Item) bool { return false }

// Collect implements Collector.
func (c Custom) Collect(ctx context.Context, inv *Inventory) error {
	entries, err := os.ReadDir(c.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), "~") {
			continue
		}
		path := filepath.Join(c.Dir, e.Name())
		fields, err := ReadCustomFile(path)
		if err != nil {
			errs = append(errs, err)
		}
		for k, v := range fields {
			inv.Set("custom."+k, v)
		}
	}
	return errors.Join(errs...)
}

// ReadCustomFile reads one file of custom fields. A bad line is an error
// naming the file and line; the good lines are still returned.
func ReadCustomFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var errs []error
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		if !ok {
			errs = append(errs, fmt.Errorf("%s line %d: want key = value", path, i+1))
			continue
		}
		if err := CheckCustom(k, v); err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %w", path, i+1, err))
			continue
		}
		out[k] = v
	}
	return out, errors.Join(errs...)
}

// CheckCustom checks a custom field's key and value.
func CheckCustom(key, value string) error {
	if err := checkName("custom." + key); err != nil || strings.Contains(key, "..") {
		return fmt.Errorf("key %q: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit", key)
	}
	if err := checkValue("custom."+key, value); err != nil {
		return fmt.Errorf("value for %q: at most %d bytes of text", key, MaxValueLen)
	}
	return nil
}
