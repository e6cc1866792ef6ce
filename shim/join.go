package shim

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// createJoined creates a container of a pod in the VM of the pod's
// sandbox task, which this shim runs (containerd sends a pod's containers
// to the sandbox's shim). Its root filesystem is an ext4 built from the
// bundle's rootfs, hot-plugged into a free drive slot of the pod's VM
// (see podSlots); the guest mounts that device as the container's root.
func (s *Service) createJoined(ctx context.Context, r *taskapi.CreateTaskRequest, sp *specs.Spec) (_ *taskapi.CreateTaskResponse, err error) {
	podID := sp.Annotations[annSandboxID]
	s.mu.Lock()
	pod, ok := s.tasks[podID]
	_, exists := s.tasks[r.ID]
	s.mu.Unlock()
	switch {
	case exists:
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "task %s", r.ID)
	case !ok || pod.joined:
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "pod sandbox %s: not run by this shim", podID)
	}
	select {
	case <-pod.vmGone:
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "pod sandbox %s: its VM has ended", podID)
	default:
	}
	plan, err := planMounts(sp, s.log, r.ID)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	t := &taskState{id: r.ID, bundle: r.Bundle, spec: sp, sandboxID: pod.sandboxID, vmmPID: pod.vmmPID,
		client: pod.client, vmGone: pod.vmGone, vmMemMiB: pod.vmMemMiB, execs: map[string]*process{}, joined: true,
		init: newProcess("", r.Terminal, r.Stdin, r.Stdout, r.Stderr)}
	if err := s.reserveSlot(pod, t); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// The slot, its drive and the ext4 go again.
			if rerr := s.removeJoined(context.WithoutCancel(ctx), t); rerr != nil {
				s.log.Warn("remove container files", "task", t.id, "err", rerr)
			}
		}
	}()
	if err := s.attachRootfs(ctx, r, sp, t); err != nil {
		return nil, err
	}
	if t.mounts, err = s.copyVolumes(ctx, pod, plan); err != nil {
		return nil, err
	}
	go func() {
		<-t.vmGone
		if started, exited, _, _, _ := t.init.state(); !started && !exited {
			t.init.exit(vmGoneStatus, s.onExit(t, t.init))
		}
	}()
	s.mu.Lock()
	s.tasks[r.ID] = t
	s.mu.Unlock()
	s.publish(topicCreate, &events.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO: &events.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}, Pid: t.vmmPID})
	return &taskapi.CreateTaskResponse{Pid: t.vmmPID}, nil
}

// mountRootfs mounts containerd's rootfs mounts (if any) on the bundle's
// rootfs directory and returns it, with the function that unmounts it.
func mountRootfs(r *taskapi.CreateTaskRequest, sp *specs.Spec) (string, func(), error) {
	dir := filepath.Join(r.Bundle, "rootfs")
	if sp.Root != nil && sp.Root.Path != "" {
		dir = sp.Root.Path
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(r.Bundle, dir)
		}
	}
	if len(r.Rootfs) == 0 {
		return dir, func() {}, nil
	}
	var ms []mount.Mount
	for _, m := range r.Rootfs {
		ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", nil, err
	}
	if err := mount.All(ms, dir); err != nil {
		return "", nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "mount the container's rootfs: %v", err)
	}
	return dir, func() { mount.UnmountAll(dir, 0) }, nil
}

// writeTar writes the tree at dir as a tar stream: directories, regular
// files (hard links kept), symbolic links, devices and FIFOs, with owners,
// modes and modification times.
func writeTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		var target string
		if fi.Mode()&os.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st != nil && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[key] = h.Name
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
