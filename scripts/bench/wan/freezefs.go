package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// A disk that stops answering, for -hang-relay-disk: the relay's block
// store is a FUSE file system over a directory beside it (go-fuse's
// loopback, without passthrough, so that reads and writes go through it
// too), every operation of which but those that let go of a file
// (release, forget) waits while it is frozen, as on a disk whose
// controller stopped answering: the relay's process lives on and answers
// pings, and its reads and writes of blocks never return.
// The subcommand freezefs serves it; SIGUSR1 freezes it, SIGUSR2 thaws
// it, SIGTERM thaws and unmounts it.

// gatedFS is a RawFileSystem whose calls wait while gate is held (frozen).
type gatedFS struct {
	fuse.RawFileSystem
	gate *sync.RWMutex
}

func (g gatedFS) wait() func() { g.gate.RLock(); return g.gate.RUnlock }

func (g gatedFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Lookup(c, h, name, out)
}

func (g gatedFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.GetAttr(c, in, out)
}

func (g gatedFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Open(c, in, out)
}

func (g gatedFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Create(c, in, name, out)
}

func (g gatedFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer g.wait()()
	return g.RawFileSystem.Read(c, in, buf)
}

func (g gatedFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer g.wait()()
	return g.RawFileSystem.Write(c, in, data)
}

func (g gatedFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Rename(c, in, oldName, newName)
}

func (g gatedFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Unlink(c, h, name)
}

func (g gatedFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Mkdir(c, in, name, out)
}

func (g gatedFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Fsync(c, in)
}

func (g gatedFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.ReadDirPlus(c, in, out)
}

func (g gatedFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer g.wait()()
	return g.RawFileSystem.Writev(c, in, data)
}

func (g gatedFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Flush(c, in)
}

func (g gatedFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.OpenDir(c, in, out)
}

func (g gatedFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.ReadDir(c, in, out)
}

func (g gatedFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.SetAttr(c, in, out)
}

func (g gatedFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Access(c, in)
}

func (g gatedFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.Rmdir(c, h, name)
}

func (g gatedFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.FsyncDir(c, in)
}

func (g gatedFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer g.wait()()
	return g.RawFileSystem.StatFs(c, h, out)
}

// freezeFS serves the subcommand freezefs: -backing DIR -mount DIR.
func freezeFS(args []string) error {
	f := flag.NewFlagSet("freezefs", flag.ExitOnError)
	backing := f.String("backing", "", "the directory that holds the files")
	mnt := f.String("mount", "", "where to mount it")
	_ = f.Parse(args)
	if *backing == "" || *mnt == "" {
		return errors.New("freezefs: -backing and -mount are required")
	}
	root, err := fs.NewLoopbackRoot(*backing)
	if err != nil {
		return fmt.Errorf("freezefs: %w", err)
	}
	// No caching of names or attributes: a frozen disk is frozen for
	// stat too.
	zero := time.Duration(0)
	raw := fs.NewNodeFS(root, &fs.Options{EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero})
	var gate sync.RWMutex
	srv, err := fuse.NewServer(gatedFS{RawFileSystem: raw, gate: &gate}, *mnt, &fuse.MountOptions{DirectMount: true, FsName: "wanbench-freezefs",
		DisabledCapabilities: fuse.CAP_PASSTHROUGH})
	if err != nil {
		return fmt.Errorf("freezefs: mount %s: %w", *mnt, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("freezefs: mount %s: %w", *mnt, err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("mounted")
	frozen := false
	for s := range sigs {
		switch {
		case s == syscall.SIGUSR1 && !frozen:
			gate.Lock()
			frozen = true
		case s == syscall.SIGUSR2 && frozen:
			gate.Unlock()
			frozen = false
		case s == syscall.SIGTERM || s == syscall.SIGINT:
			if frozen {
				gate.Unlock()
			}
			_ = srv.Unmount()
			return nil
		}
	}
	return nil
}

// A frozenDisk is a freezefs process serving a node's block store.
type frozenDisk struct {
	cmd *exec.Cmd
	mnt string
}

// mountFreezable moves dir (a node's block store) aside, beside it, and
// serves it back at dir through freezefs; the ledger keeps the process
// and the mount for cleanup.
func mountFreezable(ctx context.Context, dir string, l *ledger) (*frozenDisk, error) {
	backing := dir + ".disk"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(dir, backing); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "freezefs", "-backing", backing, "-mount", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l.add("pid", strconv.Itoa(cmd.Process.Pid))
	l.add("mount", dir)
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 64)
		n, err := out.Read(b)
		if err == nil && !strings.HasPrefix(string(b[:n]), "mounted") {
			err = fmt.Errorf("freezefs said %q", b[:n])
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, fmt.Errorf("freezefs at %s: %w", dir, err)
		}
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("freezefs at %s: not mounted within 10 s", dir)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &frozenDisk{cmd: cmd, mnt: dir}, nil
}

// freezeFor freezes the disk after delay and thaws it d after that, as
// stopFor does a process (signalFor).
func (d *frozenDisk) freezeFor(delay, dur time.Duration, frozen func(error)) (end func()) {
	end, _ = signalFor(d.cmd.Process, "freeze "+d.mnt, syscall.SIGUSR1, syscall.SIGUSR2, delay, dur, frozen)
	return end
}

// unmount is what cleanup does for a mount the ledger names: lazily, as
// the node may still hold files there.
func unmount(dir string) error {
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}
