package shim

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/container"
	"github.com/kindling-vm/kindling/image"
)

// Host bind mounts (Kubernetes volumes, CRI's /etc/hosts, /etc/hostname
// and /etc/resolv.conf, configmaps and secrets) reach the guest as copies:
// Firecracker has no shared file system (no virtio-fs), so at container
// create the shim streams the mount's file or tree into the guest's /run
// (container.VolumeDir, a tmpfs) through the agent, and the container's
// init bind-mounts that copy. A source is copied once per VM: the pod's
// containers that mount the same host path share one copy, as they would
// share the host's directory — which is what an emptyDir needs.
//
// What a copy cannot do is refused or documented: a read-write host
// directory other than a kubelet emptyDir would silently stop being shared
// with the host, so it is refused (mount it read-only, or use an
// emptyDir); writes to a read-write file (/etc/hosts, a termination log)
// stay in the VM; later changes on the host (a configmap update) are not
// seen. A copy is limited to maxVolumeBytes, since it lives in guest
// memory.

// maxVolumeBytes bounds what one bind mount may copy into the guest.
const maxVolumeBytes = 64 << 20

// emptyDirMarker is in the host path of every kubelet emptyDir volume.
const emptyDirMarker = "/volumes/kubernetes.io~empty-dir/"

// volumeFile is the name of a file mount's copy in its volume directory.
const volumeFile = "f"

// plannedMount is a mount of the spec as the guest will make it; a bind
// mount also says what to copy from the host.
type plannedMount struct {
	container.Mount
	hostPath string // a bind mount's source on the host (resolved)
	key      string // its volume's key in the guest
	file     bool   // the source is a file
}

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// planMounts checks the spec's mounts and says how each reaches the
// guest, before anything is copied or spawned.
func planMounts(sp *specs.Spec, log *slog.Logger, task string) ([]plannedMount, error) {
	var out []plannedMount
	for _, m := range sp.Mounts {
		switch {
		case standardMount(m.Destination):
			// The container's init mounts these itself.
		case m.Type == "tmpfs":
			out = append(out, plannedMount{Mount: container.Mount{Destination: m.Destination, Type: "tmpfs", Options: m.Options}})
		case isBind(m):
			pm, err := planBind(m)
			if err != nil {
				return nil, err
			}
			out = append(out, pm)
		default:
			log.Warn("mount not carried into the guest (only tmpfs and bind mounts are)", "task", task, "destination", m.Destination, "type", m.Type, "source", m.Source)
		}
	}
	return out, nil
}

func planBind(m specs.Mount) (plannedMount, error) {
	ro := slices.Contains(m.Options, "ro")
	src, err := filepath.EvalSymlinks(m.Source)
	if err != nil {
		return plannedMount{}, fmt.Errorf("bind mount %s: source: %w", m.Destination, err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return plannedMount{}, fmt.Errorf("bind mount %s: source: %w", m.Destination, err)
	}
	switch {
	case fi.Mode().IsRegular():
	case fi.IsDir():
		if !ro && !strings.Contains(src+"/", emptyDirMarker) {
			return plannedMount{}, fmt.Errorf("bind mount %s: read-write host directory %s: kindling cannot share a host directory live with a microVM (Firecracker has no shared file system); mount it read-only (it is copied into the VM at container create) or use an emptyDir", m.Destination, m.Source)
		}
	default:
		kind := "special file"
		switch {
		case fi.Mode()&fs.ModeDevice != 0:
			kind = "device"
		case fi.Mode()&fs.ModeSocket != 0:
			kind = "socket"
		case fi.Mode()&fs.ModeNamedPipe != 0:
			kind = "named pipe"
		}
		return plannedMount{}, fmt.Errorf("bind mount %s: source %s is a %s: only files and directories can be copied into the VM", m.Destination, m.Source, kind)
	}
	h := sha256.Sum256([]byte(src))
	pm := plannedMount{hostPath: src, key: hex.EncodeToString(h[:12]), file: !fi.IsDir()}
	pm.Mount = container.Mount{Destination: m.Destination, Type: "bind", Source: container.VolumeDir(pm.key)}
	if pm.file {
		pm.Source += "/" + volumeFile
	}
	if ro {
		pm.Options = []string{"ro"}
	}
	return pm, nil
}

// copyVolumes copies the bind mounts' sources into the guest of vm (the
// task that owns the VM), each host path once per VM, and returns the
// container's mounts.
func (s *Service) copyVolumes(ctx context.Context, vm *taskState, plan []plannedMount) ([]container.Mount, error) {
	var mounts []container.Mount
	for _, pm := range plan {
		mounts = append(mounts, pm.Mount)
		if pm.Type != "bind" {
			continue
		}
		s.mu.Lock()
		done := vm.volumes[pm.key]
		s.mu.Unlock()
		if done {
			continue
		}
		write := func(w io.Writer) error { return writeTar(w, pm.hostPath) }
		if pm.file {
			write = func(w io.Writer) error { return writeFileTar(w, pm.hostPath) }
		}
		if err := checkSize(pm.hostPath); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bind mount %s: %v", pm.Destination, err)
		}
		if err := sendTree(ctx, vm.client, container.VolumeDir(pm.key), write); err != nil {
			// A half-made copy would make the next container's fail too.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if rerr := vm.client.Remove(rctx, container.VolumeDir(pm.key), agent.FileOptions{User: "root"}); rerr != nil && !errors.Is(rerr, agent.ErrNotFound) {
				s.log.Warn("remove a half-made volume copy", "dir", container.VolumeDir(pm.key), "err", rerr)
			}
			cancel()
			return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "copy bind mount %s into the guest: %v", pm.Destination, err)
		}
		s.mu.Lock()
		vm.volumes[pm.key] = true
		s.mu.Unlock()
	}
	return mounts, nil
}

// checkSize refuses a source larger than maxVolumeBytes.
func checkSize(p string) error {
	var total int64
	err := filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		if total > maxVolumeBytes {
			return fmt.Errorf("%s holds more than %d MiB: too much to copy into guest memory (use a read-only image volume or the container's image)", p, maxVolumeBytes>>20)
		}
		return nil
	})
	return err
}

// writeFileTar writes a tar stream of one entry, volumeFile, with the
// content, mode, owner and time of file p.
func writeFileTar(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	h, err := tar.FileInfoHeader(fi, "")
	if err != nil {
		return err
	}
	h.Name, h.Uname, h.Gname = volumeFile, "", ""
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, f, h.Size); err != nil {
		return err
	}
	return tw.Close()
}

// sendTree streams the tar that write produces into the guest's
// "container unpack DIR" (dir must not exist yet).
func sendTree(ctx context.Context, c *agent.Client, dir string, write func(io.Writer) error) error {
	var stderr bytes.Buffer
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{image.AgentPath, container.Arg, "unpack", dir},
		User: "root", Stdin: true, Stdout: io.Discard, Stderr: &stderr})
	if err != nil {
		return fmt.Errorf("start unpack in the guest: %w", err)
	}
	werr := write(p.Stdin)
	if cerr := p.Stdin.Close(); werr == nil {
		werr = cerr
	}
	code, err := p.Wait(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("unpack in the guest: %w", err)
	case code != 0:
		return fmt.Errorf("unpack in the guest: exit %d: %s", code, bytes.TrimSpace(stderr.Bytes()))
	case werr != nil:
		return fmt.Errorf("send the tar: %w", werr)
	}
	return nil
}
