package template

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.MonitorMain() // the monitors the tests start are this binary
	// The tests set the fake's settings in FAKEFC: let them through to it.
	os.Setenv(sandbox.EnvPassEnv, "FAKEFC")
	testutil.Main(m)
}

// rig is a runtime on a fresh state root and its template store.
type rig struct {
	rt  *sandbox.Runtime
	tpl *Store
	fc  string // the firecracker executable the test configured
}

// newRuntime opens a runtime and its template store on a fresh short root,
// using the fake Firecracker unless real is set, in which case
// KINDLING_FIRECRACKER must name a real one (else the test skips). At
// cleanup it fails the test if a sandbox was left.
func newRuntime(t *testing.T, real bool) (*rig, string) {
	t.Helper()
	return newRuntimeIn(t, real, "")
}

// newRuntimeIn is newRuntime with the state root root (a new temporary
// directory when empty).
func newRuntimeIn(t *testing.T, real bool, root string) (*rig, string) {
	t.Helper()
	testutil.CheckLeaks(t)
	fc := ""
	if real {
		fc = testutil.Firecracker(t)
	} else {
		fc = testutil.FakeFirecracker(t)
	}
	if root == "" {
		root = testutil.ShortTempDir(t)
	}
	rt, err := sandbox.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(rt)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{rt: rt, tpl: s, fc: fc}
	t.Cleanup(func() {
		ctx := context.Background()
		infos, err := rt.List(ctx, sandbox.ListOptions{})
		if err != nil {
			t.Errorf("list at cleanup: %v", err)
		}
		for _, in := range infos {
			t.Errorf("sandbox %s (%s) left behind", in.ID, in.Status)
			if err := rt.Remove(ctx, in.ID, true); err != nil {
				t.Errorf("remove leftover %s: %v", in.ID, err)
			}
		}
	})
	return r, fc
}

// Root is the state root.
func (r *rig) Root() string { return r.rt.Root() }

func haltGuest(t *testing.T, msg string) string {
	return testutil.GuestKernel(t, guest.Options{Message: msg, Mode: guest.Halt})
}

// waitConsole waits until the sandbox's console holds want.
func waitConsole(t *testing.T, in sandbox.Info, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var b []byte
		for _, p := range []string{in.ConsoleLog + ".1", in.ConsoleLog} {
			part, _ := os.ReadFile(p)
			b = append(b, part...)
		}
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console of %s never showed %q; it holds %q", in.ID, want, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requireNet skips a test that needs to create taps.
func requireNet(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create taps and network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}
