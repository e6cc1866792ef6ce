package monitor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/internal/vmmproc"
)

// checkJail refuses a plan that would run a jailed VMM as root: the
// starter gives every jailed sandbox a uid of its own first.
func checkJail(p *Plan) error {
	j := p.Jail
	if j == nil {
		return nil
	}
	if j.UID == 0 {
		return fmt.Errorf("%w: the plan runs the VMM under the jailer with no uid of its own: start the sandbox again", errdefs.ErrInvalid)
	}
	for _, path := range append(append(append(append([]string{j.IDFile, j.IDLock, j.Copies, j.Shared}, j.Chroots...), j.Cgroups...), j.Parents...), j.Writable...) {
		if path != "" && (!filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/") {
			return fmt.Errorf("read the monitor plan: %w: jail path %q is not a clean absolute path", errdefs.ErrCorrupt, path)
		}
	}
	return nil
}

// jailCgroupWait bounds how long cleanJail waits for an ended VMM's
// threads to leave its cgroups (as the sandbox package's cleanJail does).
const jailCgroupWait = 3 * time.Second

// poolDrive is a hot-plugged drive as the record's machine lists it
// (vmm.MachineState's pool).
type poolDrive struct {
	Drive *struct {
		Path     string `json:"path"`
		ReadOnly bool   `json:"read_only"`
	} `json:"drive"`
}

// cleanJail removes what the ended VMM's jail left: its chroots, its
// cgroups, and the ACL entries of its uid on the writable drives, those
// hot-plugged when it ended (pool, from the record) included; then it
// releases what the jail held of the root's shared copies.
func (mon *monitor) cleanJail(pool []poolDrive) error {
	j := mon.plan.Jail
	if j == nil {
		return nil
	}
	vj := vmmproc.Jail{UID: j.UID, Writable: slices.Clone(j.Writable), Chroots: j.Chroots, Cgroups: j.Cgroups}
	for _, sl := range pool {
		if sl.Drive != nil && !sl.Drive.ReadOnly && sl.Drive.Path != "" {
			vj.Writable = append(vj.Writable, sl.Drive.Path)
		}
	}
	err := vmmproc.CleanJail(vj, jailCgroupWait)
	if j.Shared != "" {
		err = errors.Join(err, vmmproc.ReleaseShared(j.Shared, j.UID))
	}
	return err
}

// releaseJail gives back the jail uid of the sandbox being removed and
// removes its drive copies (removeJailParents, once the sandbox is gone,
// the root's jail parents). It runs with the sandbox's lock held.
func (mon *monitor) releaseJail() error {
	j := mon.plan.Jail
	if j == nil {
		return nil
	}
	var err error
	if j.IDFile != "" && j.IDLock != "" {
		err = releaseJailID(j.IDFile, j.IDLock, filepath.Join(mon.st.Root(), mon.id))
	}
	if j.Copies != "" {
		if rerr := os.RemoveAll(j.Copies); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the drive copies: %w", rerr))
		}
	}
	return err
}

// releaseJailID removes the registry file idFile, under the registry's
// lock, when it still names holder (the uid is not another sandbox's
// since).
func releaseJailID(idFile, idLock, holder string) error {
	if _, err := os.Stat(filepath.Dir(idLock)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lock, err := store.LockFile(context.Background(), idLock, store.Exclusive)
	if err != nil {
		return fmt.Errorf("release the jail uid: %w", err)
	}
	defer lock.Unlock()
	b, err := store.ReadFile(idFile, 4096)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && string(b) != holder) {
		return nil
	}
	if err == nil {
		err = os.Remove(idFile)
	}
	if err != nil {
		return fmt.Errorf("release the jail uid: %w", err)
	}
	return nil
}

// removeJailParents removes the root's jail directories once the sandbox
// has been removed, if it was the root's last: after its directory is
// gone, so that of two sandboxes removed at once the last sees none.
func (mon *monitor) removeJailParents() {
	if j := mon.plan.Jail; j != nil {
		removeEmptyParents(mon.st.Root(), j.Shared, j.Parents)
	}
}

// removeEmptyParents removes the shared copies no jail links (in shared)
// and the directories parents, those empty, when the state root has no
// sandbox left: a sandbox that starts meanwhile has its directory already,
// so its jailer never finds a parent removed under it.
func removeEmptyParents(root, shared string, parents []string) {
	if store.HoldsSandboxes(root) {
		return
	}
	if shared != "" {
		vmmproc.PurgeShared(shared)
	}
	for _, p := range parents {
		os.Remove(p)
	}
}
