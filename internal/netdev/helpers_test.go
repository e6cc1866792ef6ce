package netdev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testPrefix starts the name of every tap, link and namespace the tests
// create, so that leftovers can be found.
const testPrefix = "kdtest"

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Geteuid() == 0 {
		if left := leftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "netdev tests left behind: %s\n", strings.Join(left, ", "))
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// needRoot skips the test unless it runs as root with a usable
// /dev/net/tun, and registers a check, run at cleanup, that the test left
// no test device or namespace behind.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create tap devices and network namespaces")
	}
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("needs %s to create tap devices: %v", tunDevice, err)
	}
	closeFD(fd)
	t.Cleanup(func() {
		if left := leftovers(); len(left) > 0 {
			t.Errorf("left behind: %s", strings.Join(left, ", "))
		}
	})
}

// leftovers lists the test links in the host namespace and the test
// namespaces in /run/netns.
func leftovers() []string {
	var left []string
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return []string{fmt.Sprintf("(cannot list links: %v)", err)}
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, testPrefix) {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	for _, dir := range netnsDirs {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), testPrefix) {
				left = append(left, "netns "+filepath.Join(dir, e.Name()))
			}
		}
	}
	return left
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testTapName returns a fresh name for a test device: "kdtest" and 8 hex
// digits (14 bytes).
func testTapName(t *testing.T) string {
	return testPrefix + randomHex(t, 4)
}

// newTestNetNS creates a named network namespace "kdtest-<random>" and
// deletes it at cleanup. It returns the name and the path.
func newTestNetNS(t *testing.T) (name, path string) {
	t.Helper()
	name = testPrefix + "-" + randomHex(t, 4)
	errc := make(chan error, 1)
	go func() {
		// NewNamed moves the calling thread into the new namespace; the
		// thread stays locked so that it ends with this goroutine.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			_ = h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	path = filepath.Join("/run/netns", name)
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return name, path
}

// deleteAtCleanup deletes the tap name in netns at cleanup, and checks it is
// gone.
func deleteAtCleanup(t *testing.T, name, netns string) {
	t.Helper()
	t.Cleanup(func() {
		if err := DeleteTap(context.Background(), name, netns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// linkIn returns the link name in the namespace nsPath ("" for the host),
// read with a netlink handle of its own.
func linkIn(t *testing.T, nsPath, name string) (netlink.Link, error) {
	t.Helper()
	h, err := handleIn(t.Context(), nsPath)
	if err != nil {
		t.Fatalf("netlink handle in %q: %v", nsPath, err)
	}
	defer h.Close()
	return h.LinkByName(name)
}

// nsInode returns the inode of the network namespace of the calling thread.
func nsInode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatalf("stat own netns: %v", err)
	}
	return st.Ino
}

func fileInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}
