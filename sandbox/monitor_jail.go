package sandbox

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/kindling-vm/kindling/internal/monitor"
	"github.com/kindling-vm/kindling/vmm"
)

// jailPlan is what the monitor of the jailed sandbox rec, in dir, with its
// VMM configured as cfg, cleans at the VMM's end without this package:
// what cleanJail finds left besides vmm.CleanJail(cfg), and what
// releaseJailID and removeEmptyJailParents give back when it removes the
// sandbox. Nil for a sandbox run without the jailer.
func jailPlan(rec *record, dir string, cfg vmm.Config) *monitor.Jail {
	if cfg.Jailer == nil {
		return nil
	}
	root, id := filepath.Dir(dir), filepath.Base(dir)
	tag, vid := jailRootTag(root), vmmID(id)
	base := filepath.Join(jailChrootBase, tag)
	instance, cgroups := vmm.JailDirs(cfg)
	// This run's Firecracker's directory, and those a previous run's may
	// have left (its record may have named another Firecracker): only
	// this run adds one while the monitor lives.
	execDirs := []string{filepath.Dir(instance)}
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if d := filepath.Join(base, e.Name()); e.IsDir() && !slices.Contains(execDirs, d) {
			execDirs = append(execDirs, d)
		}
	}
	j := &monitor.Jail{UID: cfg.Jailer.UID}
	for _, d := range cfg.Drives {
		if !d.ReadOnly && d.Path != "" {
			j.Writable = append(j.Writable, d.Path)
		}
	}
	for _, d := range execDirs {
		j.Chroots = append(j.Chroots, filepath.Join(d, vid))
	}
	for _, c := range append(cgroups, cgroupCandidates(tag, vid)...) {
		if !slices.Contains(j.Cgroups, c) {
			j.Cgroups = append(j.Cgroups, c)
		}
	}
	if rec.Jail != nil {
		j.IDFile = filepath.Join(JailIDRegistry, strconv.Itoa(rec.Jail.UID))
		j.IDLock = filepath.Join(JailIDRegistry, jailIDsLock)
	}
	j.Parents = append(append(execDirs, base, jailCopiesDir(root), jailSharedDir(root)), cgroupCandidates(tag, "")...)
	j.Shared = jailSharedDir(root)
	if rec.CopyDir != "" {
		j.Copies = filepath.Join(jailCopiesDir(root), id)
	}
	return j
}
