package sandbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
)

// RootfsCopyFile is the name, in a sandbox's directory, of the root
// filesystem copy made by CreateOptions.CopyRootfs.
const RootfsCopyFile = "rootfs.ext4"

// createWithRootfsCopy records rec as st.Create does, and while the new
// sandbox is still locked has copy make its own root filesystem from
// rec.Spec.Rootfs (which was checked as the root drive) in its directory,
// then records the copy as the root drive. On error nothing is left.
func (r *Runtime) createWithRootfsCopy(ctx context.Context, rec *record, copy func(ctx context.Context, src, dst string) error) error {
	if rec.Spec.Rootfs == nil {
		return fmt.Errorf("%w: a root filesystem copy needs a root filesystem to copy", ErrInvalidSpec)
	}
	l, err := r.st.CreateLocked(ctx, rec.ID, rec)
	if err != nil {
		return err
	}
	defer l.Unlock()
	dst := filepath.Join(l.Dir(), RootfsCopyFile)
	err = copy(ctx, rec.Spec.Rootfs.Path, dst)
	if err == nil {
		rec.Spec.Rootfs = &Disk{Path: dst}
		err = l.Save(rec)
	}
	if err != nil {
		return errors.Join(err, l.Remove())
	}
	return nil
}
