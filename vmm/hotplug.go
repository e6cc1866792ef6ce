package vmm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"go.opentelemetry.io/otel/attribute"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/errdefs"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// ErrPoolExhausted is returned (wrapped) by AttachDrive when every
// placeholder slot holds a drive.
// It matches errdefs.ErrConflict: the pool is in a state that does not
// allow another drive.
var ErrPoolExhausted = errdefs.New(errdefs.ErrConflict, "placeholder pool exhausted")

// Slot is one drive of the placeholder pool: a drive attached before boot
// with an empty placeholder file, whose backing AttachDrive swaps for a
// real file and DetachDrive swaps back.
type Slot struct {
	// ID is the drive's ID in Firecracker: "pool0", "pool1", …
	ID string `json:"id"`
	// Placeholder is the placeholder file on the host.
	Placeholder string `json:"placeholder"`
	// ReadOnly is fixed when the pool is built (see WithPlaceholderAccess):
	// Firecracker keeps a drive's read-only flag when its file is swapped.
	ReadOnly bool `json:"read_only"`
	// Drive is the drive attached in the slot, nil when the slot is free.
	Drive *Drive `json:"drive,omitempty"`
	// AttachedPath is the path Firecracker was given for Drive: Drive.Path,
	// or under the jailer the file's path inside the jail.
	AttachedPath string `json:"attached_path,omitempty"`
}

// Pool returns a copy of the placeholder pool's slots.
func (m *Machine) Pool() []Slot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copySlots(m.pool)
}

func copySlots(in []Slot) []Slot {
	if in == nil {
		return nil
	}
	out := make([]Slot, len(in))
	for i, s := range in {
		out[i] = s
		if s.Drive != nil {
			d := *s.Drive
			out[i].Drive = &d
		}
	}
	return out
}

// placeholderInVM is the path Firecracker knows a slot's placeholder by.
func (m *Machine) placeholderInVMLocked(s Slot) string {
	if m.jail != nil {
		return "/" + filepath.Base(s.Placeholder)
	}
	return s.Placeholder
}

// AttachDrive hot-plugs d into a free slot of the placeholder pool and
// returns the slot's ID (the guest sees the drive where the placeholder
// was, e.g. /dev/vdb for pool0 after a root drive). d.Path is required;
// d.ReadOnly must match the pool's access mode (read-only unless the Machine
// was built WithPlaceholderAccess(PlaceholdersReadWrite)): Firecracker keeps
// the slot's flag, so a writable drive in a read-only slot would silently
// be read-only and a read-only one in a writable slot writable, and both
// are refused with an error matching ErrInvalidConfig. Root, PartUUID,
// CacheType and IOEngine are the slot's and are ignored; RateLimiter is
// applied. A full pool gives an error matching ErrPoolExhausted. The VMM
// must be running or paused.
func (m *Machine) AttachDrive(ctx context.Context, d Drive) (slotID string, err error) {
	ctx, span := m.startSpan(ctx, "vmm.AttachDrive", attribute.String("drive.path", d.Path))
	defer func() { endSpan(span, err) }()

	client, err := m.live("attach drive", phaseRunning, phasePaused)
	if err != nil {
		return "", err
	}
	if d.Path == "" {
		return "", &ConfigError{Field: "drive.path", Problem: "required", Fix: "give the backing file of the drive"}
	}
	if fi, err := os.Stat(d.Path); err != nil {
		return "", &ConfigError{Field: "drive.path", Value: fmt.Sprintf("%q", d.Path), Problem: errdefs.PathProblem(err)}
	} else if !fi.Mode().IsRegular() {
		return "", &ConfigError{Field: "drive.path", Value: fmt.Sprintf("%q", d.Path), Problem: "not a regular file"}
	}

	// Reserve a slot under the lock, so that concurrent attaches never pick
	// the same one.
	m.mu.Lock()
	idx := -1
	free, wrongMode := 0, 0
	for i, s := range m.pool {
		if s.Drive != nil {
			continue
		}
		free++
		if s.ReadOnly != d.ReadOnly {
			wrongMode++
			continue
		}
		if idx < 0 {
			idx = i
		}
	}
	if idx < 0 {
		n := len(m.pool)
		m.mu.Unlock()
		if free == 0 {
			return "", fmt.Errorf("attach drive %q: all %d placeholder slots are in use: %w", d.Path, n, ErrPoolExhausted)
		}
		mode, want := "read-only", "writable"
		if d.ReadOnly {
			mode, want = "writable", "read-only"
		}
		return "", &ConfigError{Field: "drive.read_only", Value: fmt.Sprint(d.ReadOnly),
			Problem: fmt.Sprintf("the %d free placeholder slots are %s and cannot take a %s drive", wrongMode, mode, want),
			Fix:     "attach it with ReadOnly matching the pool, or build the Machine WithPlaceholderAccess for " + want + " drives"}
	}
	slot := m.pool[idx]
	reserved := d
	m.pool[idx].Drive = &reserved
	jail := m.jail
	var seq int
	if jail != nil {
		// A Machine attached from state counts from 0 again: skip the
		// names an earlier attach still uses.
		for {
			jail.seq++
			seq = jail.seq
			if _, err := os.Lstat(filepath.Join(jail.layout.ChrootDir, fmt.Sprintf("hotplug-%s-%d", slot.ID, seq))); err != nil {
				break
			}
		}
	}
	m.mu.Unlock()

	release := func() {
		m.mu.Lock()
		m.pool[idx].Drive = nil
		m.mu.Unlock()
	}
	path := d.Path
	if jail != nil {
		name := fmt.Sprintf("/hotplug-%s-%d", slot.ID, seq)
		if path, err = jail.layout.stageFile(d.Path, name, m.cfg.Jailer.UID, m.cfg.Jailer.GID, !d.ReadOnly); err != nil {
			release()
			return "", fmt.Errorf("attach drive %q: %w", d.Path, err)
		}
	}
	if err := client.PatchDrive(ctx, fcapi.PartialDrive{
		DriveID:     slot.ID,
		PathOnHost:  path,
		RateLimiter: apiRateLimiter(d.RateLimiter),
	}); err != nil {
		release()
		if jail != nil {
			_ = os.Remove(filepath.Join(jail.layout.ChrootDir, path))
		}
		return "", fmt.Errorf("attach drive %q: %w", d.Path, err)
	}
	m.mu.Lock()
	m.pool[idx].AttachedPath = path
	m.mu.Unlock()
	return slot.ID, nil
}

// DetachDrive swaps the drive in a pool slot back for its placeholder. id is
// the slot ID AttachDrive returned, or the ID of the attached Drive. An
// unknown or free slot gives an error matching ErrNotFound. The guest should
// have stopped using the drive: Firecracker swaps the file under it.
func (m *Machine) DetachDrive(ctx context.Context, id string) (err error) {
	ctx, span := m.startSpan(ctx, "vmm.DetachDrive", attribute.String("drive.id", id))
	defer func() { endSpan(span, err) }()

	client, err := m.live("detach drive", phaseRunning, phasePaused)
	if err != nil {
		return err
	}
	m.mu.Lock()
	idx := -1
	for i, s := range m.pool {
		if s.Drive != nil && (s.ID == id || (s.Drive.ID != "" && s.Drive.ID == id)) {
			idx = i
			break
		}
	}
	if idx < 0 {
		m.mu.Unlock()
		return fmt.Errorf("detach drive %q: no attached drive in the placeholder pool has this ID: %w", id, ErrNotFound)
	}
	slot := m.pool[idx]
	placeholder := m.placeholderInVMLocked(slot)
	m.mu.Unlock()

	if err := client.PatchDrive(ctx, fcapi.PartialDrive{DriveID: slot.ID, PathOnHost: placeholder}); err != nil {
		return fmt.Errorf("detach drive %q: %w", id, err)
	}
	m.mu.Lock()
	m.pool[idx].Drive = nil
	m.pool[idx].AttachedPath = ""
	jail := m.jail
	m.mu.Unlock()
	if jail != nil && slot.AttachedPath != "" {
		// The drive's link or copy in the jail, and the access given to
		// the jail's uid on a writable one, go with it.
		_ = os.Remove(filepath.Join(jail.layout.ChrootDir, slot.AttachedPath))
		if !slot.Drive.ReadOnly && m.cfg.Jailer.UID != 0 {
			if err := kunix.RevokeUserACL(slot.Drive.Path, m.cfg.Jailer.UID); err != nil {
				return fmt.Errorf("detach drive %q: %w", id, err)
			}
		}
	}
	return nil
}

// ResizeMemory sets the guest's usable memory to mib MiB. Below the boot
// size (Config.MemoryMiB) it inflates the balloon by the difference, which
// needs a Balloon device; above it, it plugs the difference with virtio-mem,
// which needs a MemoryHotplug device and Firecracker ≥ 1.14. Either way the
// other device, if present, is set back to its neutral size. Without the
// device a size needs, the error matches ErrNotSupported.
func (m *Machine) ResizeMemory(ctx context.Context, mib int) (err error) {
	ctx, span := m.startSpan(ctx, "vmm.ResizeMemory", attribute.Int("memory.mib", mib))
	defer func() { endSpan(span, err) }()

	client, err := m.live("resize memory", phaseRunning, phasePaused)
	if err != nil {
		return err
	}
	if mib <= 0 {
		return &ConfigError{Field: "memory_mib", Value: fmt.Sprint(mib), Problem: "must be positive"}
	}
	m.mu.Lock()
	ver := m.version
	m.mu.Unlock()
	base := m.cfg.MemoryMiB
	balloon, hotplug := m.cfg.Balloon != nil, m.cfg.MemoryHotplug != nil
	if hotplug {
		if err := fcapi.CapabilitiesOf(ver).Check(fcapi.FeatureMemoryHotplug); err != nil {
			hotplug = false
		}
	}
	switch {
	case mib > base:
		if !hotplug {
			return &NotSupportedError{Op: "resize memory",
				Reason: fmt.Sprintf("growing past the boot size of %d MiB needs a MemoryHotplug device (Firecracker ≥ 1.14; running %s)", base, ver)}
		}
		if limit := m.cfg.MemoryHotplug.TotalMiB; mib-base > limit {
			return &ConfigError{Field: "memory_mib", Value: fmt.Sprint(mib),
				Problem: fmt.Sprintf("over the boot size %d MiB plus the hot-pluggable %d MiB", base, limit)}
		}
		if balloon {
			if err := client.PatchBalloon(ctx, fcapi.BalloonUpdate{AmountMiB: 0}); err != nil {
				return fmt.Errorf("resize memory: %w", err)
			}
		}
		if err := client.PatchMemoryHotplug(ctx, fcapi.MemoryHotplugSizeUpdate{RequestedSizeMiB: mib - base}); err != nil {
			return fmt.Errorf("resize memory: %w", err)
		}
		return nil
	case mib < base && !balloon:
		return &NotSupportedError{Op: "resize memory",
			Reason: fmt.Sprintf("shrinking below the boot size of %d MiB needs a Balloon device", base)}
	}
	if hotplug {
		if err := client.PatchMemoryHotplug(ctx, fcapi.MemoryHotplugSizeUpdate{RequestedSizeMiB: 0}); err != nil {
			return fmt.Errorf("resize memory: %w", err)
		}
	}
	if balloon {
		if err := client.PatchBalloon(ctx, fcapi.BalloonUpdate{AmountMiB: base - mib}); err != nil {
			return fmt.Errorf("resize memory: %w", err)
		}
	} else if !hotplug {
		return &NotSupportedError{Op: "resize memory", Reason: "the VM has neither a Balloon nor a MemoryHotplug device"}
	}
	return nil
}

// ResizeVCPUs always fails with an error matching ErrNotSupported:
// Firecracker cannot add or remove vCPUs of a running microVM.
func (m *Machine) ResizeVCPUs(ctx context.Context, vcpus int) error {
	return &NotSupportedError{Op: "resize vCPUs", Reason: "Firecracker cannot hot-plug vCPUs; set Config.VCPUs before Start"}
}
