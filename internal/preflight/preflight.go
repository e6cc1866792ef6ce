package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Status is the outcome of one check.
type Status string

// The outcomes, from good to bad.
const (
	// OK: the host has what kindling needs.
	OK Status = "ok"
	// Warn: something is missing that only some uses need (a jailer, a tun
	// device), or that works in an unusual way; Result.Fix says what to do.
	Warn Status = "warn"
	// Fail: sandboxes cannot run here until Result.Fix is done.
	Fail Status = "fail"
)

// Result is what one check found.
type Result struct {
	// Check names the check: "kvm", "firecracker", "jailer", "cgroup",
	// "tun", "state-root", "tmpfs", "user-namespaces".
	Check string `json:"check"`
	// Status is ok, warn or fail.
	Status Status `json:"status"`
	// Detail is one line that says what was found, naming the thing:
	// "/dev/kvm: no such device: this host has no KVM".
	Detail string `json:"detail"`
	// Fix says what to do about a warning or failure; empty when ok.
	Fix string `json:"fix,omitempty"`
}

// Error is a failed blocking check, returned by Host.Preflight. Its message
// is the check's detail and fix on one line.
type Error struct {
	Result
	// Err is the kind of failure: errdefs.ErrNotFound for a missing
	// executable, errdefs.ErrNotSupported for a host without usable KVM,
	// or the error of the operation that failed.
	Err error
}

// Error returns "detail: fix".
func (e *Error) Error() string {
	if e.Fix == "" {
		return e.Detail
	}
	return e.Detail + ": " + e.Fix
}

// Unwrap returns the kind of failure.
func (e *Error) Unwrap() error { return e.Err }

// Lookup resolves the executable to use from the path given on the command
// line, "" for none. It returns an error matching errdefs.ErrNotFound when it
// finds none; a given path is returned as it is (Preflight checks that it
// exists).
type Lookup func(given string) (string, error)

// Host describes what to check and where. The zero Host checks the real
// host with LookupFirecracker and LookupJailer.
type Host struct {
	// Dev, Proc and Sys are where /dev, /proc and /sys are read from
	// ("" for those).
	Dev, Proc, Sys string
	// StateRoot is the state root whose writability is checked; "" skips
	// that check.
	StateRoot string

	// Firecracker is the firecracker executable given (--firecracker),
	// "" to let FindFirecracker look for one.
	Firecracker string
	// FindFirecracker finds the firecracker executable; nil for
	// LookupFirecracker.
	FindFirecracker Lookup
	// FirecrackerFix tells a person the ways to give a firecracker
	// executable; "" for FirecrackerHint.
	FirecrackerFix string

	// Jailer is the jailer executable given (--jailer), "" to let FindJailer
	// look for one.
	Jailer string
	// FindJailer finds the jailer executable; nil for LookupJailer.
	FindJailer Lookup

	// openFile opens a device; nil for os.OpenFile. Tests replace it to
	// see a permission error as root.
	openFile func(name string, flag int, perm os.FileMode) (*os.File, error)
	// euid returns the effective user ID; nil for os.Geteuid.
	euid func() int
}

func (h *Host) path(base, def, rel string) string {
	if base == "" {
		base = def
	}
	return filepath.Join(base, rel)
}

func (h *Host) dev(rel string) string  { return h.path(h.Dev, "/dev", rel) }
func (h *Host) proc(rel string) string { return h.path(h.Proc, "/proc", rel) }
func (h *Host) sys(rel string) string  { return h.path(h.Sys, "/sys", rel) }

func (h *Host) open(name string, flag int) (*os.File, error) {
	if h.openFile != nil {
		return h.openFile(name, flag, 0)
	}
	return os.OpenFile(name, flag, 0)
}

// Check runs every check and returns their results in a fixed order: kvm,
// firecracker, jailer, cgroup, tun, state-root (when StateRoot is set),
// tmpfs, user-namespaces.
func (h *Host) Check(ctx context.Context) []Result {
	fc := h.checkFirecracker(ctx)
	rs := []Result{
		h.checkKVM(fc.fake).Result,
		fc.Result,
		h.checkJailer(ctx, fc.rel),
		h.checkCgroup(),
		h.checkTun(),
	}
	if h.StateRoot != "" {
		rs = append(rs, h.checkStateRoot())
	}
	return append(rs, h.checkTmpfs(), h.checkUserNamespaces())
}

// Failed reports whether any of rs failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Preflight runs the checks without which no sandbox can start: a
// firecracker executable exists (found as FindFirecracker finds it), and
// /dev/kvm can be opened for reading and writing, unless that executable is
// kindling's fake Firecracker. It returns the first failure as an *Error,
// nil when the host can run sandboxes.
func (h *Host) Preflight(ctx context.Context) error {
	fc, err := h.findFirecracker()
	if err != nil {
		return err
	}
	kvm := h.checkKVM(false)
	if kvm.Status != Fail {
		return nil
	}
	if isFake(ctx, fc) {
		return nil
	}
	return &Error{Result: kvm.Result, Err: kvm.err}
}

// findFirecracker resolves and stats the firecracker executable; the error
// is an *Error.
func (h *Host) findFirecracker() (string, error) {
	find := h.FindFirecracker
	if find == nil {
		find = LookupFirecracker
	}
	fix := h.FirecrackerFix
	if fix == "" {
		fix = FirecrackerHint
	}
	p, err := find(h.Firecracker)
	if err != nil {
		return "", &Error{Result: Result{Check: "firecracker", Status: Fail, Detail: err.Error(), Fix: fix}, Err: err}
	}
	if err := checkExecutable(p); err != nil {
		return "", &Error{
			Result: Result{Check: "firecracker", Status: Fail, Detail: fmt.Sprintf("firecracker %s: %s", p, errdefs.PathProblem(err)), Fix: "give the path of a firecracker executable"},
			Err:    err,
		}
	}
	return p, nil
}

// checkExecutable returns an error unless p is a regular file with an
// execute bit.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return errors.New("not a regular file")
	case fi.Mode().Perm()&0o111 == 0:
		return errors.New("not executable")
	}
	return nil
}
