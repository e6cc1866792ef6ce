package netdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tunDevice is the clone device through which tun/tap devices are made.
const tunDevice = "/dev/net/tun"

// MTU limits the kernel accepts for a tap device (its maximum is 65535
// less the 14-byte Ethernet header).
const (
	MinMTU = 68
	MaxMTU = 65521
)

// testHookBeforePersist, if set by a test, runs in CreateTap just before the
// tap is made persistent; an error from it fails the creation.
var testHookBeforePersist func() error

// TapSpec describes a tap device to create.
type TapSpec struct {
	// Name is the device name; see ValidateTapName. TapName derives one
	// from a sandbox ID.
	Name string
	// NetNS is the network namespace to create the tap in, as a name or a
	// path (see ResolveNetNS); "" means the caller's current namespace.
	NetNS string
	// Owner, if set, lets that user or group attach to the tap without
	// CAP_NET_ADMIN (a Firecracker run by the jailer as an unprivileged
	// user needs it). Nil leaves the tap to privileged processes only.
	Owner *Owner
	// MTU of the device; 0 keeps the kernel's default (1500).
	MTU int
}

// Owner names the user and group allowed to attach to a tap. A negative ID
// leaves that one unset.
type Owner struct {
	UID int
	GID int
}

// Validate checks the spec without touching the system.
func (s TapSpec) Validate() error {
	if err := ValidateTapName(s.Name); err != nil {
		return err
	}
	if s.MTU != 0 && (s.MTU < MinMTU || s.MTU > MaxMTU) {
		return invalid("MTU of tap", s.Name, fmt.Sprintf("%d is outside %d–%d", s.MTU, MinMTU, MaxMTU))
	}
	if s.Owner != nil && s.Owner.UID < 0 && s.Owner.GID < 0 {
		return invalid("owner of tap", s.Name, "both uid and gid are negative (use a nil Owner for none)")
	}
	return nil
}

// Tap describes a tap device on the host, as CreateTap made it.
type Tap struct {
	Name  string // device name
	NetNS string // path of its network namespace; "" for the caller's current one
	Index int    // interface index inside that namespace
	MTU   int
	// HardwareAddr is the host side's MAC, not the guest's.
	HardwareAddr net.HardwareAddr
	// Up reports whether the device is administratively up.
	Up bool
}

// CreateTap creates a persistent tap device as Firecracker wants it
// (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, one queue) in spec.NetNS, applies the
// owner and MTU, brings it up and returns it. The tap stays after the call
// and after the process exits, until DeleteTap.
//
// If a device of that name already exists the error matches ErrExists. On
// any failure, or if ctx ends before the tap is complete, nothing is left
// behind: the tap is made persistent only as the last step, so closing the
// creating descriptor removes a half-built one.
func CreateTap(ctx context.Context, spec TapSpec) (*Tap, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("create tap: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create tap %q: %w", spec.Name, err)
	}
	nsPath, err := resolveOptionalNetNS(spec.NetNS)
	if err != nil {
		return nil, fmt.Errorf("create tap %q: %w", spec.Name, err)
	}
	var tap *Tap
	err = Do(nsPath, func() error {
		var err error
		tap, err = createTapHere(ctx, spec, nsPath)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create tap %q in %s: %w", spec.Name, nsDesc(nsPath), err)
	}
	return tap, nil
}

// createTapHere does CreateTap's work in the calling thread's namespace.
func createTapHere(ctx context.Context, spec TapSpec, nsPath string) (*Tap, error) {
	h, err := newHandle(ctx)
	if err != nil {
		return nil, err
	}
	defer h.Close()

	// Say what is in the way; TUNSETIFF with IFF_TUN_EXCL below closes the
	// race with anyone creating the same name in between.
	if link, err := h.LinkByName(spec.Name); err == nil {
		return nil, fmt.Errorf("%s named %q %w", describe(link), spec.Name, ErrExists)
	} else if !isLinkNotFound(err) {
		return nil, fmt.Errorf("look up link: %w", err)
	}

	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", tunDevice, err)
	}
	// Until TUNSETPERSIST, the device lives only as long as fd: closing it
	// is the rollback. After it, the close cannot undo anything.
	defer closeFD(fd)

	ifr, err := unix.NewIfreq(spec.Name)
	if err != nil {
		return nil, fmt.Errorf("tap name: %w", err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("a device named %q %w", spec.Name, ErrExists)
		}
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if got := ifr.Name(); got != spec.Name {
		return nil, fmt.Errorf("TUNSETIFF: kernel named the device %q, want %q", got, spec.Name)
	}
	if o := spec.Owner; o != nil {
		if o.UID >= 0 {
			if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, o.UID); err != nil {
				return nil, fmt.Errorf("set owner uid %d: %w", o.UID, err)
			}
		}
		if o.GID >= 0 {
			if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, o.GID); err != nil {
				return nil, fmt.Errorf("set owner gid %d: %w", o.GID, err)
			}
		}
	}

	link, err := h.LinkByName(spec.Name)
	if err != nil {
		return nil, fmt.Errorf("look up new tap: %w", err)
	}
	if spec.MTU != 0 {
		if err := h.LinkSetMTU(link, spec.MTU); err != nil {
			return nil, fmt.Errorf("set MTU %d: %w", spec.MTU, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	if link, err = h.LinkByIndex(link.Attrs().Index); err != nil {
		return nil, fmt.Errorf("look up new tap: %w", err)
	}
	if testHookBeforePersist != nil {
		if err := testHookBeforePersist(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return nil, fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	return tapFromLink(link, nsPath), nil
}

// SetTapOwner hands the existing tap name in the network namespace netns
// (a name or path; "" for the current one) to owner, as CreateTap's
// TapSpec.Owner would have: a tap made ahead of time (a pooled network
// slot's) for a VMM whose unprivileged user is known only later. It needs
// CAP_NET_ADMIN and a tap no process is attached to (else ErrBusy); a
// missing tap is ErrNotFound.
func SetTapOwner(name, netns string, owner Owner) error {
	if err := (TapSpec{Name: name, Owner: &owner}).Validate(); err != nil {
		return fmt.Errorf("set owner of tap: %w", err)
	}
	nsPath, err := resolveOptionalNetNS(netns)
	if err != nil {
		return fmt.Errorf("set owner of tap %q: %w", name, err)
	}
	err = Do(nsPath, func() error {
		h, err := newHandle(context.Background())
		if err != nil {
			return err
		}
		defer h.Close()
		tun, err := lookupTuntap(h, name)
		if err != nil {
			return err
		}
		if err := checkUsable(tun); err != nil {
			return err
		}
		fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", tunDevice, err)
		}
		// The device is persistent: closing the descriptor detaches it
		// and leaves it.
		defer closeFD(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		// The flags CreateTap gave it: attaching sets the device's flags.
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("a process is already attached to it: %w", ErrBusy)
			}
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		if owner.UID >= 0 {
			if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, owner.UID); err != nil {
				return fmt.Errorf("set owner uid %d: %w", owner.UID, err)
			}
		}
		if owner.GID >= 0 {
			if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, owner.GID); err != nil {
				return fmt.Errorf("set owner gid %d: %w", owner.GID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set owner of tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	return nil
}

// DeleteTap deletes the tap device name in the network namespace netns (a
// name or path; "" for the current one). It is idempotent: a tap that does
// not exist is not an error, and DeleteTap returns nil. It refuses, with
// ErrNotTap, to delete a device of that name that is not a tun/tap device.
// A namespace that does not exist is an error matching ErrNotFound (the
// namespace may still live without its file, and so may the tap in it).
func DeleteTap(ctx context.Context, name, netns string) error {
	if err := ValidateTapName(name); err != nil {
		return fmt.Errorf("delete tap: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete tap %q: %w", name, err)
	}
	nsPath, err := resolveOptionalNetNS(netns)
	if err != nil {
		return fmt.Errorf("delete tap %q: %w", name, err)
	}
	h, err := handleIn(ctx, nsPath)
	if err != nil {
		return fmt.Errorf("delete tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	defer h.Close()
	link, err := lookupTuntap(h, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	if err := h.LinkDel(link); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil // deleted by someone else meanwhile
		}
		return fmt.Errorf("delete tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	return nil
}

// TapExists reports whether a tun/tap device called name exists in netns (a
// name or path; "" for the current one). A device of that name that is not
// a tun/tap gives false and an error matching ErrNotTap; a namespace that
// does not exist gives an error matching ErrNotFound.
func TapExists(name, netns string) (bool, error) {
	if err := ValidateTapName(name); err != nil {
		return false, fmt.Errorf("find tap: %w", err)
	}
	nsPath, err := resolveOptionalNetNS(netns)
	if err != nil {
		return false, fmt.Errorf("find tap %q: %w", name, err)
	}
	h, err := handleIn(context.Background(), nsPath)
	if err != nil {
		return false, fmt.Errorf("find tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	defer h.Close()
	_, err = lookupTuntap(h, name)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	return true, nil
}

// CheckTap checks that an existing device can be given to Firecracker as a
// sandbox's tap. The device name in netns (a name or path; "" for the
// current one) must exist (else ErrNotFound) and be a tap: a tun/tap device
// in tap (layer-2) mode with a single queue (else ErrNotTap). If it is up,
// it must also not be attached to another process already (else ErrBusy:
// the kernel lets one process at a time attach to such a tap; for a down
// tap this cannot be seen).
func CheckTap(name, netns string) error {
	if err := ValidateTapName(name); err != nil {
		return fmt.Errorf("check tap: %w", err)
	}
	nsPath, err := resolveOptionalNetNS(netns)
	if err != nil {
		return fmt.Errorf("check tap %q: %w", name, err)
	}
	h, err := handleIn(context.Background(), nsPath)
	if err != nil {
		return fmt.Errorf("check tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	defer h.Close()
	link, err := lookupTuntap(h, name)
	if err == nil {
		err = checkUsable(link)
	}
	if err != nil {
		return fmt.Errorf("check tap %q in %s: %w", name, nsDesc(nsPath), err)
	}
	return nil
}

// checkUsable checks that a tun/tap link is one Firecracker can attach to.
func checkUsable(link *netlink.Tuntap) error {
	attrs := link.Attrs()
	tapMode := link.Mode == netlink.TUNTAP_MODE_TAP ||
		(link.Mode == 0 && attrs.EncapType == "ether")
	if !tapMode {
		return fmt.Errorf("it is a tun (layer-3) device, Firecracker needs a tap: %w", ErrNotTap)
	}
	if link.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		return fmt.Errorf("it is a multi-queue tap, Firecracker needs a single-queue one: %w", ErrNotTap)
	}
	// The kernel turns a tap's carrier on while a process is attached and
	// off when none is; it reports the carrier only for an up device.
	if attrs.RawFlags&unix.IFF_UP != 0 && attrs.RawFlags&unix.IFF_LOWER_UP != 0 {
		return fmt.Errorf("a process is already attached to it (is another VMM using it?): %w", ErrBusy)
	}
	return nil
}

// lookupTuntap finds the link name through h and checks that it is a
// tun/tap device. A missing link gives an error matching ErrNotFound.
func lookupTuntap(h *netlink.Handle, name string) (*netlink.Tuntap, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("look up link: %w", err)
	}
	if link.Attrs().Name != name {
		// The kernel also finds devices by alternative name.
		return nil, fmt.Errorf("%q is an alternative name of device %q: %w", name, link.Attrs().Name, ErrNotTap)
	}
	tun, ok := link.(*netlink.Tuntap)
	if !ok {
		return nil, fmt.Errorf("it is %s: %w", describe(link), ErrNotTap)
	}
	return tun, nil
}

func tapFromLink(link netlink.Link, nsPath string) *Tap {
	a := link.Attrs()
	return &Tap{
		Name:         a.Name,
		NetNS:        nsPath,
		Index:        a.Index,
		MTU:          a.MTU,
		HardwareAddr: a.HardwareAddr,
		Up:           a.RawFlags&unix.IFF_UP != 0,
	}
}

// describe says what kind of device link is, for error messages.
func describe(link netlink.Link) string {
	switch t := link.(type) {
	case *netlink.Tuntap:
		if t.Mode == netlink.TUNTAP_MODE_TUN {
			return "a tun device"
		}
		return "a tap device"
	case *netlink.Device:
		return "a network device (physical, loopback or of an unknown kind)"
	}
	return "a " + link.Type() + " device"
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// resolveOptionalNetNS resolves a namespace name or path, keeping "" (the
// current namespace) as is.
func resolveOptionalNetNS(netns string) (string, error) {
	if netns == "" {
		return "", nil
	}
	return ResolveNetNS(netns)
}

func nsDesc(nsPath string) string {
	if nsPath == "" {
		return "the current netns"
	}
	return "netns " + nsPath
}

// handleIn returns a netlink handle whose socket lives in the namespace
// nsPath ("" for the current one). The socket keeps its namespace, so the
// handle can then be used from any goroutine.
func handleIn(ctx context.Context, nsPath string) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := Do(nsPath, func() error {
		var err error
		h, err = newHandle(ctx)
		return err
	})
	return h, err
}

// newHandle opens a route netlink handle in the calling thread's namespace,
// with socket timeouts taken from ctx's deadline, if any.
func newHandle(ctx context.Context) (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		if err := h.SetSocketTimeout(max(time.Until(deadline), time.Millisecond)); err != nil {
			h.Close()
			return nil, fmt.Errorf("set netlink socket timeout: %w", err)
		}
	}
	return h, nil
}
