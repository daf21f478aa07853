package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/swdist/swdist/content/blocks"
	"github.com/swdist/swdist/content/pkg"
	"github.com/swdist/swdist/gossip"
	"github.com/swdist/swdist/node/inventory"
	"github.com/swdist/swdist/node/job"
	"github.com/swdist/swdist/node/store"
)

// Parameters of an install job.
const (
	paramScript      = "script"       // run in the installed directory after unpacking
	paramIfInstalled = "if_installed" // skip (default) or reinstall
)

// safeName is what a package's name and version may be, as they become
// directories of the install root.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// jobPackage fetches the package a job names, saying "fetching" first.
func (n *Node) jobPackage(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (cid.Cid, pkg.Root, error) {
	if m.Package == nil {
		return cid.Undef, pkg.Root{}, fmt.Errorf("the %s job names no package", m.Type)
	}
	root, err := cid.Decode(m.Package.CID)
	if err != nil {
		return cid.Undef, pkg.Root{}, fmt.Errorf("package %q: %w", m.Package.CID, err)
	}
	if err := n.store.AddPin(ctx, store.Pin{CID: root.String(), Job: m.JobID, Until: m.ExpiresAt}); err != nil {
		return root, pkg.Root{}, fmt.Errorf("pin package %s: %w", root, err)
	}
	// "fetching", with bytes held and total: at the start, and then a
	// few times as blocks arrive (see progressGate).
	gate := progressGate{every: progressEvery, step: progressStep, idle: progressIdle}
	report := func(held, total int64) {
		if gate.due(time.Now(), held, total) {
			n.exec.Progress(m.JobID, held, total)
		}
	}
	report(0, int64(m.Package.Size))
	r, err := n.fetchPackage(ctx, root, report)
	if err != nil {
		return root, r, err
	}
	if err := n.store.AddPackage(ctx, store.Package{CID: root.String(), Name: r.Name, Version: r.Version, Size: r.Size,
		Stored: r.Stored, Chunks: len(r.Chunks), AddedAt: time.Now()}); err != nil {
		return root, r, err
	}
	n.afterFetch(ctx)
	return root, r, nil
}

// How often a destination reports how far its fetch got: at least
// progressEvery apart, and each time only once it has moved another
// progressStep of the package (or, on a slow link, after progressIdle
// with any progress). A fetch thus sends about 1/progressStep reports
// (plus one per progressIdle of a slow one), whatever the package's size,
// so that 10,000 clients fetching at once do not flood their relays.
const (
	progressEvery = 2 * time.Second
	progressStep  = 0.10
	progressIdle  = 30 * time.Second
)

// progressGate decides which fetch progress is reported.
type progressGate struct {
	every, idle time.Duration
	step        float64
	last        time.Time // of the last report; zero: none yet
	lastHeld    int64
	lastTotal   int64
}

// due reports whether progress held of total, at now, is reported: the
// first always; none once all is held (the next state says so); others
// per the gate's bounds.
func (g *progressGate) due(now time.Time, held, total int64) bool {
	switch {
	case g.last.IsZero() || total != g.lastTotal && held < total:
		// The first, or the total known at last (from the package's root).
	case held >= total || held <= g.lastHeld || now.Sub(g.last) < g.every:
		return false
	case float64(held-g.lastHeld) < g.step*float64(total) && now.Sub(g.last) < g.idle:
		return false
	}
	g.last, g.lastHeld, g.lastTotal = now, held, total
	return true
}

// Install conditions: a job's parameters that say where it may install.
const (
	paramOS      = "os"       // e.g. linux: runtime.GOOS must be it
	paramArch    = "arch"     // e.g. amd64: runtime.GOARCH must be it
	paramMinFree = "min_free" // bytes free at the install root beyond the package, e.g. 1G
)

// unmet says which install condition this machine does not meet ("" if
// it meets them all); root is the install root, size the package's.
func (n *Node) unmet(m gossip.Manifest, root string, size uint64) (string, error) {
	if want := m.Params[paramOS]; want != "" && want != runtime.GOOS {
		return fmt.Sprintf("condition os=%s not met: this machine runs %s", want, runtime.GOOS), nil
	}
	if want := m.Params[paramArch]; want != "" && want != runtime.GOARCH {
		return fmt.Sprintf("condition arch=%s not met: this machine is %s", want, runtime.GOARCH), nil
	}
	if want := m.Params[paramMinFree]; want != "" {
		need, ok := inventory.ParseNumber(want)
		if !ok {
			return "", fmt.Errorf("condition min_free=%q: not a size", want)
		}
		if err := os.MkdirAll(root, 0o755); err != nil {
			return "", err
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(root, &st); err != nil {
			return "", fmt.Errorf("free space at %s: %w", root, err)
		}
		free := float64(st.Bavail) * float64(st.Bsize)
		if free-float64(size) < need {
			return fmt.Sprintf("condition min_free=%s not met: %.0f bytes free at %s, %d needed for the package", want, free, root, size), nil
		}
	}
	return "", nil
}

// installDir is where a package's version is installed.
func (n *Node) installDir(name, version string) string {
	root := n.cfg.Jobs.InstallRoot
	if !filepath.IsAbs(root) {
		root = filepath.Join(n.home.Dir, root)
	}
	return filepath.Join(root, name, version)
}

// installJob runs an "install" job: fetch the package through the tree,
// unpack it into the install root (name/version), run its script there,
// and record it; a failed script leaves no trace of this version. Other
// versions of the same package are removed once this one is in place.
func (n *Node) installJob(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (string, error) {
	root, r, err := n.jobPackage(ctx, m, step)
	if err != nil {
		return "", err
	}
	if !safeName.MatchString(r.Name) || !safeName.MatchString(r.Version) {
		return "", fmt.Errorf("package name %q or version %q cannot name a directory", r.Name, r.Version)
	}
	dir := n.installDir(r.Name, r.Version)
	if why, err := n.unmet(m, filepath.Dir(filepath.Dir(dir)), r.Size); err != nil {
		return "", err
	} else if why != "" {
		return "", &job.Ended{Status: job.Status{State: job.Skipped, Reason: why}}
	}
	have, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return "", err
	}
	for _, i := range have {
		if i.Name == r.Name && i.Version == r.Version && m.Params[paramIfInstalled] != "reinstall" {
			return "", &job.Ended{Status: job.Status{State: job.Skipped, Reason: fmt.Sprintf("%s %s is already installed (%s)", r.Name, r.Version, i.Path)}}
		}
	}
	step(job.Running, "unpacking into "+dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	staged := dir + ".new"
	os.RemoveAll(staged) // a previous attempt that died half way
	if err := pkg.Unpack(ctx, n.blocks, root, staged); err != nil {
		return "", err
	}
	out := ""
	if script := m.Params[paramScript]; script != "" {
		s := job.Shell(ctx, staged, script, job.Timeout(m), job.DefaultMaxOutput)
		if s.State != job.Succeeded {
			os.RemoveAll(staged) // rollback: the machine is as it was
			s.Reason = "install script: " + s.Reason + "; nothing was installed"
			return "", &job.Ended{Status: s}
		}
		out = s.Output
	}
	old := dir + ".old"
	os.RemoveAll(old)
	if _, err := os.Lstat(dir); err == nil {
		if err := os.Rename(dir, old); err != nil {
			os.RemoveAll(staged)
			return "", err
		}
	}
	if err := os.Rename(staged, dir); err != nil {
		os.Rename(old, dir)
		return "", err
	}
	os.RemoveAll(old)
	if err := n.store.RecordInstalled(ctx, store.Installed{Name: r.Name, Version: r.Version, CID: root.String(), Path: dir, Job: m.JobID, At: time.Now()}); err != nil {
		return "", err
	}
	for _, i := range have { // an upgrade: the other versions go
		if i.Name == r.Name && i.Version != r.Version {
			if err := os.RemoveAll(i.Path); err != nil {
				n.log.Warn("remove the version replaced", "path", i.Path, "err", err)
				continue
			}
			if err := n.store.ForgetInstalled(ctx, i.Name, i.Version); err != nil {
				return "", err
			}
		}
	}
	n.inv.Trigger("installed " + r.Name + " " + r.Version)
	return fmt.Sprintf("installed %s %s in %s\n%s", r.Name, r.Version, dir, out), nil
}

// recoverInstalls, at start, finishes what a crash interrupted: a version
// that was being replaced and is missing gets its previous files back, and
// half-unpacked staging directories go.
func (n *Node) recoverInstalls(ctx context.Context) error {
	have, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return err
	}
	for _, i := range have {
		if _, err := os.Lstat(i.Path); err == nil {
			continue
		}
		if _, err := os.Lstat(i.Path + ".old"); err == nil {
			n.log.Warn("restoring files of an install the node did not finish", "path", i.Path)
			if err := os.Rename(i.Path+".old", i.Path); err != nil {
				return err
			}
		}
	}
	staged, _ := filepath.Glob(n.installDir("*", "*") + ".new")
	for _, s := range staged {
		n.log.Warn("removing a package the node did not finish unpacking", "path", s)
		os.RemoveAll(s)
	}
	return nil
}

// uninstallJob runs an "uninstall" job: the package's optional script
// runs in its directory, then its files and record go. Params: name, and
// version (default: every version installed).
func (n *Node) uninstallJob(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (string, error) {
	name, version := m.Params["name"], m.Params["version"]
	have, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return "", err
	}
	var gone []string
	out := ""
	for _, i := range have {
		if i.Name != name || (version != "" && i.Version != version) {
			continue
		}
		if len(gone) == 0 {
			step(job.Running, "")
		}
		if script := m.Params[paramScript]; script != "" {
			s := job.Shell(ctx, i.Path, script, job.Timeout(m), job.DefaultMaxOutput)
			if s.State != job.Succeeded {
				s.Reason = "uninstall script: " + s.Reason + "; the package stays installed"
				return "", &job.Ended{Status: s}
			}
			out += s.Output
		}
		if err := os.RemoveAll(i.Path); err != nil {
			return "", fmt.Errorf("remove %s: %w", i.Path, err)
		}
		if err := n.store.ForgetInstalled(ctx, i.Name, i.Version); err != nil {
			return "", err
		}
		gone = append(gone, i.Name+" "+i.Version)
	}
	if len(gone) == 0 {
		what := name
		if version != "" {
			what += " " + version
		}
		return "", &job.Ended{Status: job.Status{State: job.Skipped, Reason: what + " is not installed here"}}
	}
	n.inv.Trigger("uninstalled " + name)
	return fmt.Sprintf("uninstalled %v\n%s", gone, out), nil
}

// transferJob runs a "transfer" job: the package is fetched and kept here
// (staged for a later install), nothing else.
func (n *Node) transferJob(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (string, error) {
	_, r, err := n.jobPackage(ctx, m, step)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("staged %s %s (%d bytes)", r.Name, r.Version, r.Stored), nil
}

// deleteJob runs a "delete" job: a package staged here (by a transfer or a
// relay's prefetch) is removed, with the blocks no other package held
// here needs. A package installed here is left alone.
func (n *Node) deleteJob(ctx context.Context, m gossip.Manifest, step func(state, reason string)) (string, error) {
	if m.Package == nil {
		return "", fmt.Errorf("the delete job names no package")
	}
	root, err := cid.Decode(m.Package.CID)
	if err != nil {
		return "", fmt.Errorf("package %q: %w", m.Package.CID, err)
	}
	r, err := pkg.ReadRoot(ctx, n.blocks, root)
	if errors.Is(err, blocks.ErrNotFound) {
		return "", &job.Ended{Status: job.Status{State: job.Skipped, Reason: "the package is not held here"}}
	}
	if err != nil {
		return "", err
	}
	installed, err := n.store.InstalledSoftware(ctx)
	if err != nil {
		return "", err
	}
	for _, i := range installed {
		if i.CID == root.String() {
			return "", &job.Ended{Status: job.Status{State: job.Skipped, Reason: fmt.Sprintf("%s %s is installed here: uninstall it first", i.Name, i.Version)}}
		}
	}
	step(job.Running, "")
	keep := map[string]bool{}
	others, err := n.store.Packages(ctx)
	if err != nil {
		return "", err
	}
	for _, o := range others {
		oc, err := cid.Decode(o.CID)
		if err != nil || oc.Equals(root) {
			continue
		}
		or, err := pkg.ReadRoot(ctx, n.blocks, oc)
		if err != nil {
			continue // not held: nothing of it to keep
		}
		keep[oc.KeyString()] = true
		for _, c := range or.CIDs() {
			keep[c.KeyString()] = true
		}
	}
	freed, kept := 0, 0
	for _, c := range append(r.CIDs(), root) {
		if keep[c.KeyString()] {
			kept++
			continue
		}
		if err := n.blocks.Delete(ctx, c); err != nil {
			return "", err
		}
		freed++
	}
	if err := n.store.ForgetPackage(ctx, root.String()); err != nil {
		return "", err
	}
	if err := n.store.Unpin(ctx, root.String()); err != nil {
		return "", err
	}
	return fmt.Sprintf("deleted %s %s: %d blocks removed, %d shared with other packages kept", r.Name, r.Version, freed, kept), nil
}
