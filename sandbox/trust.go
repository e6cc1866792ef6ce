package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/vmm"
)

// WithExecutables names firecracker and jailer executables the caller
// trusts besides the default ones (found through $KINDLING_FIRECRACKER,
// $KINDLING_JAILER, PATH and the installed release): Start runs a sandbox
// whose record names one of them. Relative paths are made absolute.
func WithExecutables(paths ...string) Option {
	return func(r *Runtime) {
		for _, p := range paths {
			if p == "" {
				continue
			}
			if a, err := filepath.Abs(p); err == nil {
				r.trust(a)
			}
		}
	}
}

// trust records executables this runtime's caller named (absolute paths;
// empty ones are skipped).
func (r *Runtime) trust(paths ...string) {
	r.trustMu.Lock()
	defer r.trustMu.Unlock()
	for _, p := range paths {
		if p != "" {
			r.trusted[p] = true
		}
	}
}

// trusts reports whether the caller of this runtime configured the
// executable path of kind k: named it to this runtime (trust), or it is
// the one found by default ($KINDLING_FIRECRACKER / $KINDLING_JAILER, PATH,
// the installed release).
func (r *Runtime) trusts(k install.Kind, path string) bool {
	r.trustMu.Lock()
	ok := r.trusted[path]
	r.trustMu.Unlock()
	if ok {
		return true
	}
	def, err := install.Find(k, "")
	return err == nil && def == path
}

// checkExecutables refuses to start a sandbox whose record names a
// firecracker or jailer executable the caller did not configure. A state
// file is data: the executable it names is only compared with the
// caller's, so that whoever could write the record cannot choose what
// runs (as root).
func (r *Runtime) checkExecutables(rec *record) error {
	for _, e := range []struct {
		kind install.Kind
		path string
	}{{install.Firecracker, rec.Spec.Firecracker}, {install.Jailer, rec.Spec.Jailer}} {
		if e.path == "" || r.trusts(e.kind, e.path) {
			continue
		}
		return fmt.Errorf("%w: sandbox %q was created to run %s %s, which is not the one configured now: "+
			"give it to start (--%s) or set %s=%s if you trust that file, or create the sandbox again",
			ErrInvalidSpec, rec.ID, e.kind, e.path, e.kind, e.kind.Env(), e.path)
	}
	return nil
}

// checkSnapshotRelease refuses, before anything is recorded or spawned, a
// firecracker executable whose release cannot load a snapshot written by
// release want ("1.7.0"; empty skips the check, as for old manifests).
// have is fc's release when the caller knows it already.
func (r *Runtime) checkSnapshotRelease(ctx context.Context, fc, have, want, dir string) error {
	if want == "" {
		return nil
	}
	sv, err := fcapi.ParseVersion(want)
	if err != nil {
		return fmt.Errorf("snapshot %s: firecracker release %q: %w: %w", dir, want, ErrCorrupt, err)
	}
	var v fcapi.Version
	if have != "" {
		v, err = fcapi.ParseVersion(have)
	} else {
		v, err = r.executableRelease(ctx, fc)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if !vmm.SameRelease(sv, v) {
		return fmt.Errorf("%w: snapshot %s was written by Firecracker %s and cannot be loaded by %s (%s): give the firecracker of that release",
			ErrInvalidSpec, dir, sv, v, fc)
	}
	return nil
}

// checkDriveFiles refuses a spec that gives one file to the guest twice
// with one of the two writable: two devices writing one file corrupt it.
func checkDriveFiles(spec Spec) error {
	type use struct {
		path     string
		readOnly bool
		fi       os.FileInfo
	}
	var uses []use
	add := func(d Disk) {
		u := use{path: d.Path, readOnly: d.ReadOnly}
		u.fi, _ = os.Stat(d.Path) // a missing file is the driver's to report
		uses = append(uses, u)
	}
	if spec.Rootfs != nil {
		add(*spec.Rootfs)
	}
	for _, d := range spec.Drives {
		add(d)
	}
	for i, a := range uses {
		for _, b := range uses[i+1:] {
			same := a.path == b.path || (a.fi != nil && b.fi != nil && os.SameFile(a.fi, b.fi))
			if same && (!a.readOnly || !b.readOnly) {
				return fmt.Errorf("%w: %s is given twice as a drive, and writable: give each read-write drive its own file (or both :ro)", ErrInvalidSpec, b.path)
			}
		}
	}
	return nil
}

// EnvPassEnv names the environment variable listing (comma-separated) the
// further environment variables a sandbox's monitor and Firecracker get
// besides the minimal set (see monitorEnv).
const EnvPassEnv = "KINDLING_PASS_ENV"

// monitorEnv is the environment of a monitor, and so of its Firecracker:
// only what they need of env — PATH, the locale and time zone, TMPDIR and
// kindling's own KINDLING_* settings — and the variables named in
// $KINDLING_PASS_ENV; not the caller's whole environment, which may hold
// secrets neither needs.
func monitorEnv(env []string) []string {
	pass := map[string]bool{"PATH": true, "TZ": true, "LANG": true, "TMPDIR": true}
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == EnvPassEnv {
			for _, name := range strings.Split(v, ",") {
				if name = strings.TrimSpace(name); name != "" {
					pass[name] = true
				}
			}
		}
	}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if pass[k] || strings.HasPrefix(k, "KINDLING_") || strings.HasPrefix(k, "LC_") {
			out = append(out, kv)
		}
	}
	return out
}
