package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
)

// podSlots is the size of the drive hotplug pool of a VM the shim creates:
// how many containers of a pod, besides its sandbox container, can hold a
// root filesystem at once (running or exited, until they are removed).
// Every slot is a virtio-blk device: with the guest's root, the sandbox
// container's root, the vsock and the pod's NIC, 8 stays within the 17
// virtio devices every supported Firecracker can give an interrupt.
const podSlots = 8

// slotDevice is the guest's device of hotplug slot poolN: the pool follows
// the VM's two drives (vda, the guest's root, and vdb, the sandbox
// container's root), so pool0 is /dev/vdc.
func slotDevice(slot string) (string, error) {
	var n int
	if _, err := fmt.Sscanf(slot, "pool%d", &n); err != nil || n < 0 || n >= podSlots {
		return "", fmt.Errorf("hotplug slot %q: not one of the shim's pool0…pool%d", slot, podSlots-1)
	}
	return "/dev/vd" + string(rune('c'+n)), nil
}

// reserveSlot counts t against the pod's slots, or says why there is none
// left, before anything is built.
func (s *Service) reserveSlot(pod, t *taskState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	used := 0
	for _, o := range s.tasks {
		if o.joined && o.sandboxID == pod.sandboxID && o.rootExt4 != "" {
			used++
		}
	}
	if used >= podSlots {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition,
			"pod sandbox %s: all %d drive slots hold containers' roots (kindling runs at most %d containers in a pod beside its sandbox, exited ones included): remove an exited container of the pod",
			pod.id, podSlots, podSlots)
	}
	t.rootExt4 = filepath.Join(pod.workDir, "join-"+shortHash(t.id)+".ext4")
	return nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:12])
}

// attachRootfs builds the container's ext4 from the bundle's rootfs
// (containerd's mounts mounted for the time of the build) and hot-plugs it
// into a free slot of the pod's VM.
func (s *Service) attachRootfs(ctx context.Context, r *taskapi.CreateTaskRequest, sp *specs.Spec, t *taskState) error {
	start := time.Now()
	if err := buildContainerRootfs(ctx, r, sp, t.rootExt4); err != nil {
		return err
	}
	built := time.Since(start)
	rt, err := s.runtime()
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "kindling runtime at %s: %v", s.cfg.Root, err)
	}
	slot, err := rt.AttachDrive(ctx, t.sandboxID, sandbox.Disk{Path: t.rootExt4})
	if errors.Is(err, vmm.ErrPoolExhausted) {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "pod's VM %s: every drive slot is taken: remove an exited container of the pod: %v", t.sandboxID, err)
	}
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrUnavailable, "attach the container's root to the pod's VM: %v", err)
	}
	t.rootSlot = slot
	if t.rootDevice, err = slotDevice(slot); err != nil {
		return errdefs.ToGRPCf(errdefs.ErrInternal, "%v", err)
	}
	s.log.Debug("container root attached", "task", t.id, "slot", slot, "device", t.rootDevice, "build", built)
	return nil
}

// removeJoined gives a joined container's slot back (the placeholder
// swapped in again) and removes its ext4. The container must have ended:
// its mount of the device went with its last process.
func (s *Service) removeJoined(ctx context.Context, t *taskState) error {
	var errs []error
	if t.rootSlot != "" {
		select {
		case <-t.vmGone: // the VM, and its slots, are gone
		default:
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := s.rt.DetachDrive(ctx, t.sandboxID, t.rootSlot); err != nil && !errors.Is(err, sandbox.ErrNotFound) && !isGone(err) {
				errs = append(errs, fmt.Errorf("detach the root of %s from slot %s: %w", t.id, t.rootSlot, err))
			}
		}
		t.rootSlot = ""
	}
	if t.rootExt4 != "" {
		if err := os.Remove(t.rootExt4); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isGone reports whether err says the VM has ended (its slots with it).
func isGone(err error) bool {
	return errors.Is(err, sandbox.ErrInvalidState)
}
