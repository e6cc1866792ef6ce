package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/sandbox"
)

// LabelBuildOwner is the label that names the process running the build of
// a builder sandbox, as "PID:START" (START is the process's start time in
// clock ticks after boot, so that a reused PID is not taken for it). A
// builder whose owner is gone was left by a build that was killed before it
// could remove it (SIGKILL, a crash, a power cut): CleanBuilders removes it.
const LabelBuildOwner = "kindling.template.build-owner"

// ownerLabel is this process's LabelBuildOwner value, "" when its start
// time cannot be read.
func ownerLabel() string {
	pid := os.Getpid()
	start, err := kunix.ProcessStartTime(pid)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", pid, start)
}

// ownerGone reports whether the process a LabelBuildOwner value names has
// ended. A value it cannot read is not taken as gone: that builder is left
// for the user (or 'kindling rm') to decide.
func ownerGone(v string) bool {
	p, s, ok := strings.Cut(v, ":")
	if !ok {
		return false
	}
	pid, err1 := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(s, 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return false
	}
	now, err := kunix.ProcessStartTime(pid)
	if errors.Is(err, kunix.ErrNoProcess) {
		return true
	}
	return err == nil && now != start
}

// CleanBuilders removes the builder sandboxes (LabelBuild) left by builds
// whose process is gone, with what they hold, and returns their IDs. A
// builder whose build still runs, in this process or another, is left
// alone.
func (s *Store) CleanBuilders(ctx context.Context) (removed []string, err error) {
	ctx, end := s.span(ctx, "template.CleanBuilders", "")
	defer end(&err)
	infos, err := s.rt.List(ctx, sandbox.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("find template builders: %w", err)
	}
	var errs []error
	for _, in := range infos {
		if _, ok := in.Spec.Labels[LabelBuild]; !ok {
			continue
		}
		if !ownerGone(in.Spec.Labels[LabelBuildOwner]) {
			continue
		}
		err := s.rt.Remove(ctx, in.ID, true)
		switch {
		case err == nil:
			removed = append(removed, in.ID)
		case !errors.Is(err, sandbox.ErrNotFound):
			errs = append(errs, fmt.Errorf("remove the builder %s of template %q left by a killed build: %w", in.ID, in.Spec.Labels[LabelBuild], err))
		}
	}
	return removed, errors.Join(errs...)
}
