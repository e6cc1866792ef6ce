package netdev

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestCreateTap(t *testing.T) {
	tests := []struct {
		name    string
		inNetNS bool
		owner   *Owner
		mtu     int
	}{
		{name: "host"},
		{name: "host with owner and MTU", owner: &Owner{UID: 12345, GID: 12346}, mtu: 9000},
		{name: "host with uid only", owner: &Owner{UID: 12345, GID: -1}},
		{name: "netns", inNetNS: true},
		{name: "netns with owner and MTU", inNetNS: true, owner: &Owner{UID: 12345, GID: 12346}, mtu: 1400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			needRoot(t)
			var nsName, nsPath string
			if tt.inNetNS {
				nsName, nsPath = newTestNetNS(t)
			}
			name := testTapName(t)
			spec := TapSpec{Name: name, NetNS: nsName, Owner: tt.owner, MTU: tt.mtu}
			tap, err := CreateTap(t.Context(), spec)
			if err != nil {
				t.Fatalf("CreateTap(%+v): %v", spec, err)
			}
			deleteAtCleanup(t, name, nsPath)

			wantMTU := tt.mtu
			if wantMTU == 0 {
				wantMTU = 1500
			}
			if tap.Name != name || tap.NetNS != nsPath || tap.MTU != wantMTU || !tap.Up || tap.Index <= 0 || len(tap.HardwareAddr) != 6 {
				t.Errorf("CreateTap = %+v, want name %q, netns %q, MTU %d, up", tap, name, nsPath, wantMTU)
			}

			// What the kernel says about it, through netlink.
			link, err := linkIn(t, nsPath, name)
			if err != nil {
				t.Fatalf("tap not found with netlink: %v", err)
			}
			tun, ok := link.(*netlink.Tuntap)
			if !ok {
				t.Fatalf("link is a %s, want tuntap", link.Type())
			}
			if tun.Mode != netlink.TUNTAP_MODE_TAP || tun.NonPersist ||
				tun.Flags&netlink.TUNTAP_NO_PI == 0 || tun.Flags&netlink.TUNTAP_VNET_HDR == 0 ||
				tun.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
				t.Errorf("tap mode %v, flags %#x, non-persistent %v; want a persistent single-queue tap with NO_PI and VNET_HDR",
					tun.Mode, tun.Flags, tun.NonPersist)
			}
			if tt.owner != nil {
				if tt.owner.UID >= 0 && tun.Owner != uint32(tt.owner.UID) {
					t.Errorf("owner uid %d, want %d", tun.Owner, tt.owner.UID)
				}
				if tt.owner.GID >= 0 && tun.Group != uint32(tt.owner.GID) {
					t.Errorf("owner gid %d, want %d", tun.Group, tt.owner.GID)
				}
			}
			if link.Attrs().MTU != wantMTU || link.Attrs().RawFlags&unix.IFF_UP == 0 {
				t.Errorf("link MTU %d, flags %#x; want MTU %d and up", link.Attrs().MTU, link.Attrs().RawFlags, wantMTU)
			}

			if ok, err := TapExists(name, nsPath); err != nil || !ok {
				t.Errorf("TapExists(%q, %q) = %v, %v; want true", name, nsPath, ok, err)
			}
			if err := CheckTap(name, nsName); err != nil {
				t.Errorf("CheckTap(%q, %q) = %v", name, nsName, err)
			}
			if tt.inNetNS {
				if _, err := linkIn(t, "", name); err == nil {
					t.Errorf("tap %q of netns %s is visible in the host namespace", name, nsPath)
				}
				if ok, err := TapExists(name, ""); err != nil || ok {
					t.Errorf("TapExists(%q, host) = %v, %v; want false", name, ok, err)
				}
			}

			if err := DeleteTap(t.Context(), name, nsPath); err != nil {
				t.Fatalf("DeleteTap: %v", err)
			}
			if ok, err := TapExists(name, nsPath); err != nil || ok {
				t.Errorf("after DeleteTap, TapExists = %v, %v; want false", ok, err)
			}
			if _, err := linkIn(t, nsPath, name); err == nil {
				t.Errorf("after DeleteTap, netlink still finds %q", name)
			}
		})
	}
}

func TestCreateTapExists(t *testing.T) {
	tests := []struct {
		name     string
		existing func(t *testing.T, name string)
		wantMsg  string
	}{
		{"tap", func(t *testing.T, name string) {
			if _, err := CreateTap(t.Context(), TapSpec{Name: name}); err != nil {
				t.Fatal(err)
			}
			deleteAtCleanup(t, name, "")
		}, "a tap device named"},
		{"bridge", func(t *testing.T, name string) { addBridge(t, name) }, "a bridge device named"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			needRoot(t)
			name := testTapName(t)
			tt.existing(t, name)
			before, err := linkIn(t, "", name)
			if err != nil {
				t.Fatal(err)
			}
			_, err = CreateTap(t.Context(), TapSpec{Name: name, MTU: 1280})
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("second CreateTap = %v, want ErrExists saying %q", err, tt.wantMsg)
			}
			t.Logf("error: %v", err)
			after, err := linkIn(t, "", name)
			if err != nil {
				t.Fatalf("the existing device is gone after the failed create: %v", err)
			}
			if after.Attrs().Index != before.Attrs().Index || after.Attrs().MTU != before.Attrs().MTU {
				t.Errorf("the failed create changed the existing device: %+v → %+v", before.Attrs(), after.Attrs())
			}
		})
	}
}

// TestCreateTapRace creates the same tap from several goroutines at once:
// exactly one wins.
func TestCreateTapRace(t *testing.T) {
	testutil.CheckLeaks(t)
	needRoot(t)
	name := testTapName(t)
	deleteAtCleanup(t, name, "")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = CreateTap(context.Background(), TapSpec{Name: name})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrExists):
			t.Errorf("CreateTap: %v, want nil or ErrExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent creates succeeded, want 1", won, n)
	}
}

// TestCreateTapRollback fails CreateTap at its last step and checks that no
// device is left.
func TestCreateTapRollback(t *testing.T) {
	errHook := errors.New("injected")
	tests := []struct {
		name    string
		hook    func(cancel context.CancelFunc) error
		wantErr error
	}{
		{"step fails", func(context.CancelFunc) error { return errHook }, errHook},
		{"ctx cancelled", func(cancel context.CancelFunc) error { cancel(); return nil }, context.Canceled},
	}
	for _, tt := range tests {
		for _, inNetNS := range []bool{false, true} {
			name := tt.name
			if inNetNS {
				name += " in netns"
			}
			t.Run(name, func(t *testing.T) {
				testutil.CheckLeaks(t)
				needRoot(t)
				var nsPath string
				if inNetNS {
					_, nsPath = newTestNetNS(t)
				}
				tap := testTapName(t)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				testHookBeforePersist = func() error {
					if _, err := linkIn(t, nsPath, tap); err != nil {
						t.Errorf("before the failure, the tap does not exist: %v", err)
					}
					return tt.hook(cancel)
				}
				t.Cleanup(func() { testHookBeforePersist = nil })
				_, err := CreateTap(ctx, TapSpec{Name: tap, NetNS: nsPath, MTU: 2000, Owner: &Owner{UID: 1, GID: 1}})
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("CreateTap = %v, want %v", err, tt.wantErr)
				}
				if _, err := linkIn(t, nsPath, tap); err == nil {
					t.Errorf("tap %q left behind after a failed CreateTap", tap)
					if err := DeleteTap(context.Background(), tap, nsPath); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
}

func TestCreateTapInvalid(t *testing.T) {
	tests := []struct {
		name    string
		spec    TapSpec
		wantErr error
		wantMsg string
	}{
		{"long name", TapSpec{Name: "averyveryverylongname"}, ErrInvalid,
			`create tap: tap name "averyveryverylongname": longer than 15 bytes`},
		{"empty name", TapSpec{}, ErrInvalid, `create tap: tap name "": empty`},
		{"MTU too small", TapSpec{Name: "kdtest0", MTU: 67}, ErrInvalid,
			`create tap: MTU of tap "kdtest0": 67 is outside 68–65521`},
		{"MTU too large", TapSpec{Name: "kdtest0", MTU: 65522}, ErrInvalid,
			`create tap: MTU of tap "kdtest0": 65522 is outside 68–65521`},
		{"no owner ids", TapSpec{Name: "kdtest0", Owner: &Owner{UID: -1, GID: -1}}, ErrInvalid,
			`create tap: owner of tap "kdtest0": both uid and gid are negative (use a nil Owner for none)`},
		{"missing netns", TapSpec{Name: "kdtest0", NetNS: "/run/netns/kdtest-missing"}, ErrNotFound,
			`create tap "kdtest0": netns /run/netns/kdtest-missing: not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CreateTap(t.Context(), tt.spec)
			if !errors.Is(err, tt.wantErr) || err.Error() != tt.wantMsg {
				t.Fatalf("CreateTap(%+v) = %v\nwant %s (matching %v)", tt.spec, err, tt.wantMsg, tt.wantErr)
			}
		})
	}
}

func TestCreateTapCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := CreateTap(ctx, TapSpec{Name: "kdtest0"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateTap with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestDeleteTap(t *testing.T) {
	tests := []struct {
		name    string
		inNetNS bool
		setup   func(t *testing.T, name, nsPath string)
		wantErr error
		// wantLink: the device must still exist afterwards.
		wantLink bool
	}{
		{name: "missing in host"},
		{name: "missing in netns", inNetNS: true},
		{name: "twice", setup: func(t *testing.T, name, _ string) {
			if _, err := CreateTap(t.Context(), TapSpec{Name: name}); err != nil {
				t.Fatal(err)
			}
			if err := DeleteTap(t.Context(), name, ""); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "attached", setup: func(t *testing.T, name, _ string) {
			createTestTap(t, name)
			attach(t, name)
		}},
		{name: "not a tap", setup: func(t *testing.T, name, _ string) { addBridge(t, name) },
			wantErr: ErrNotTap, wantLink: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			needRoot(t)
			var nsPath string
			if tt.inNetNS {
				_, nsPath = newTestNetNS(t)
			}
			name := testTapName(t)
			if tt.setup != nil {
				tt.setup(t, name, nsPath)
			}
			err := DeleteTap(t.Context(), name, nsPath)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("DeleteTap = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				t.Logf("error: %v", err)
			}
			if _, err := linkIn(t, nsPath, name); (err == nil) != tt.wantLink {
				t.Errorf("after DeleteTap, device found: %v, want %v", err == nil, tt.wantLink)
			}
		})
	}
}

func TestDeleteTapErrors(t *testing.T) {
	tests := []struct {
		name, tap, netns string
		wantErr          error
	}{
		{"invalid name", "a/b", "", ErrInvalid},
		{"missing netns", "kdtest0", "/run/netns/kdtest-missing", ErrNotFound},
		{"not a netns", "kdtest0", "/proc/self/ns/mnt", ErrNotNetNS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := DeleteTap(t.Context(), tt.tap, tt.netns); !errors.Is(err, tt.wantErr) {
				t.Fatalf("DeleteTap(%q, %q) = %v, want %v", tt.tap, tt.netns, err, tt.wantErr)
			}
		})
	}
}

func TestCheckTap(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, name string)
		wantErr error
	}{
		{"created", func(t *testing.T, name string) { createTestTap(t, name) }, nil},
		{"missing", func(*testing.T, string) {}, ErrNotFound},
		{"bridge", func(t *testing.T, name string) { addBridge(t, name) }, ErrNotTap},
		{"tun mode", func(t *testing.T, name string) {
			addTuntap(t, &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN,
				Flags: netlink.TUNTAP_NO_PI})
		}, ErrNotTap},
		{"multi-queue", func(t *testing.T, name string) {
			addTuntap(t, &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP,
				Flags: netlink.TUNTAP_MULTI_QUEUE_DEFAULTS | netlink.TUNTAP_VNET_HDR})
		}, ErrNotTap},
		{"attached", func(t *testing.T, name string) {
			createTestTap(t, name)
			attach(t, name)
		}, ErrBusy},
		{"detached again", func(t *testing.T, name string) {
			createTestTap(t, name)
			fd := attach(t, name)
			closeFD(fd)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			needRoot(t)
			name := testTapName(t)
			tt.setup(t, name)
			err := CheckTap(name, "")
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("CheckTap = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				t.Logf("error: %v", err)
			}
		})
	}
}

func TestTapExistsErrors(t *testing.T) {
	testutil.CheckLeaks(t)
	needRoot(t)
	name := testTapName(t)
	addBridge(t, name)
	tests := []struct {
		name, tap, netns string
		wantErr          error
	}{
		{"not a tap", name, "", ErrNotTap},
		{"invalid name", "a b", "", ErrInvalid},
		{"missing netns", "kdtest0", "kdtest-missing", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := TapExists(tt.tap, tt.netns)
			if ok || !errors.Is(err, tt.wantErr) {
				t.Fatalf("TapExists(%q, %q) = %v, %v; want false, %v", tt.tap, tt.netns, ok, err, tt.wantErr)
			}
			t.Logf("error: %v", err)
		})
	}
}

// createTestTap creates a tap in the host namespace, deleted at cleanup.
func createTestTap(t *testing.T, name string) {
	t.Helper()
	if _, err := CreateTap(t.Context(), TapSpec{Name: name}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, name, "")
}

// addBridge adds a bridge link in the host namespace, deleted at cleanup.
func addBridge(t *testing.T, name string) {
	t.Helper()
	link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("delete bridge %s: %v", name, err)
		}
	})
}

// addTuntap adds a persistent tun/tap link with netlink's own helper, deleted
// at cleanup (through netlink, as DeleteTap would refuse nothing here).
func addTuntap(t *testing.T, link *netlink.Tuntap) {
	t.Helper()
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("add tuntap %s: %v", link.Name, err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("delete tuntap %s: %v", link.Name, err)
		}
	})
}

// attach attaches to the tap name as Firecracker does, and returns the
// descriptor, closed at cleanup if still open.
func attach(t *testing.T, name string) int {
	t.Helper()
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		closeFD(fd)
		t.Fatalf("attach to %s: %v", name, err)
	}
	t.Cleanup(func() { closeFD(fd) })
	return fd
}

// SetTapOwner hands a tap made without an owner to one; a tap in use and
// a missing one are refused.
func TestSetTapOwner(t *testing.T) {
	testutil.CheckLeaks(t)
	needRoot(t)
	nsName, nsPath := newTestNetNS(t)
	name := testTapName(t)
	if _, err := CreateTap(t.Context(), TapSpec{Name: name, NetNS: nsName}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, name, nsPath)
	owner := func() (uint32, uint32) {
		t.Helper()
		link, err := linkIn(t, nsPath, name)
		if err != nil {
			t.Fatal(err)
		}
		tun := link.(*netlink.Tuntap)
		if tun.NonPersist {
			t.Error("the tap is no longer persistent")
		}
		return tun.Owner, tun.Group
	}
	if err := SetTapOwner(name, nsName, Owner{UID: 12345, GID: 12346}); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(); u != 12345 || g != 12346 {
		t.Errorf("owner %d:%d, want 12345:12346", u, g)
	}
	if link, err := linkIn(t, nsPath, name); err != nil || link.(*netlink.Tuntap).Flags&(netlink.TUNTAP_VNET_HDR|netlink.TUNTAP_NO_PI) != netlink.TUNTAP_VNET_HDR|netlink.TUNTAP_NO_PI {
		t.Errorf("after SetTapOwner: %+v, %v; want the flags CreateTap gave", link, err)
	}
	if err := SetTapOwner(name, nsPath, Owner{UID: 23456, GID: -1}); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(); u != 23456 || g != 12346 {
		t.Errorf("owner %d:%d, want 23456:12346", u, g)
	}
	// The owner attaches without privilege; another uid may not.
	if err := attachAs(nsPath, name, 23456, 12346); err != nil {
		t.Errorf("uid 23456, the tap's owner, attaching: %v", err)
	}
	if err := attachAs(nsPath, name, 34567, 12346); !errors.Is(err, unix.EPERM) {
		t.Errorf("uid 34567 attaching to uid 23456's tap: %v, want EPERM", err)
	}
	f, err := AttachTap(name, nsPath)
	if err != nil {
		t.Fatal(err)
	}
	err = SetTapOwner(name, nsPath, Owner{UID: 1, GID: 1})
	_ = f.Close()
	if !errors.Is(err, ErrBusy) {
		t.Errorf("SetTapOwner of an attached tap: %v, want ErrBusy", err)
	}
	if u, _ := owner(); u != 23456 {
		t.Errorf("a refused SetTapOwner changed the owner to %d", u)
	}
	if err := SetTapOwner("kdnosuch0", nsPath, Owner{UID: 1, GID: -1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetTapOwner of a missing tap: %v, want ErrNotFound", err)
	}
	if err := SetTapOwner(name, nsPath, Owner{UID: -1, GID: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetTapOwner with no ids: %v, want ErrInvalid", err)
	}
}

// attachAs attaches to the tap name in the namespace nsPath as uid and
// gid (with no capabilities: what changing every uid away from 0 leaves a
// thread), from a thread of its own that is then discarded, and detaches.
func attachAs(nsPath, name string, uid, gid int) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine ends locked and the runtime ends
		// the thread, which can change neither its uid nor its namespace
		// back.
		runtime.LockOSThread()
		done <- func() error {
			ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer closeFD(ns)
			if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
				return err
			}
			// Opened as root: the device node may be root's alone (the
			// jailer makes one the jail's uid may open); attaching is
			// what the tap's owner governs, checked at TUNSETIFF.
			fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer closeFD(fd)
			// Raw: this thread only, not the whole process as
			// unix.Setresuid would.
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
				return e
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
				return e
			}
			ifr, err := unix.NewIfreq(name)
			if err != nil {
				return err
			}
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
			return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}()
	}()
	return <-done
}
