package vmmproc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// Jail is what a VMM run under the jailer leaves on the host once it has
// exited: the chroot directories, its cgroups, and ACL entries of its uid
// on the caller's writable files.
type Jail struct {
	// UID is the jail's uid, whose ACL entries are revoked from Writable.
	UID int `json:"uid"`
	// Writable are host files the jail's uid was given access to.
	Writable []string `json:"writable,omitempty"`
	// Chroots are jail directories removed with everything they hold.
	Chroots []string `json:"chroots,omitempty"`
	// Cgroups are cgroup directories removed once empty.
	Cgroups []string `json:"cgroups,omitempty"`
}

// CleanJail removes what j names. It must be called only once the VMM has
// exited; cgroups still busy (the last threads of a VMM just ended may not
// have left) are retried for up to cgroupWait. What is not there is fine.
func CleanJail(j Jail, cgroupWait time.Duration) error {
	var errs []error
	if j.UID != 0 {
		for _, p := range j.Writable {
			if err := kunix.RevokeUserACL(p, j.UID); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, p := range j.Chroots {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if !RemoveCgroups(j.Cgroups, cgroupWait) {
		held := CgroupHolders(j.Cgroups)
		errs = append(errs, fmt.Errorf("remove cgroups %s: busy (held by %s)", strings.Join(j.Cgroups, ", "), held))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean jail: %w", err)
	}
	return nil
}

// RemoveCgroups removes the cgroup directories dirs, retrying those still
// busy until timeout has passed; it reports whether they are all gone.
func RemoveCgroups(dirs []string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		busy := false
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				busy = true
			}
		}
		if !busy {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CgroupHolders names the processes still in the cgroups dirs.
func CgroupHolders(dirs []string) string {
	var out []string
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, p := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile("/proc/" + p + "/comm")
			out = append(out, fmt.Sprintf("PID %s (%s)", p, strings.TrimSpace(string(comm))))
		}
	}
	return strings.Join(out, ", ")
}
