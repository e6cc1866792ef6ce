package fcapi_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// target is a Firecracker executable to run the scenarios against.
type target struct {
	name    string
	bin     func(t *testing.T) string
	fakefc  string // FAKEFC value, fake only
	version fcapi.Version
	fake    bool
}

// targets returns the fake emulating 1.14.2 and 1.7.0, and the real
// binary in $KINDLING_FIRECRACKER (skipped when unset).
func targets() []target {
	return []target{
		{name: "fake-1.14.2", bin: fakeBin, fakefc: `{"version":"1.14.2","ctrl_alt_del":"ignore"}`, version: fcapi.MustParseVersion("1.14.2"), fake: true},
		{name: "fake-1.7.0", bin: fakeBin, fakefc: `{"version":"1.7.0","ctrl_alt_del":"ignore"}`, version: fcapi.MustParseVersion("1.7.0"), fake: true},
		{name: "real", bin: func(t *testing.T) string { return testutil.Firecracker(t) }},
	}
}

func fakeBin(t *testing.T) string { return testutil.FakeFirecracker(t) }

// vmm is one spawned Firecracker (real or fake).
type vmm struct{ *testutil.VMM }

// spawn starts bin with its API socket in a short temporary directory and
// waits until the API answers. The process is killed and reaped, and its
// files removed, at cleanup.
func spawn(t *testing.T, bin, fakefc string) *vmm {
	t.Helper()
	v := testutil.StartVMM(t, testutil.VMMConfig{Path: bin, Env: []string{"FAKEFC=" + fakefc}, LogFile: true})
	c, err := fcapi.New(v.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetInstanceInfo(t.Context()); err != nil {
		t.Fatalf("%s: API not ready: %v\nstderr: %s", bin, err, v.Stderr)
	}
	return &vmm{v}
}

// client returns a client for m that counts the requests it sends.
func (m *vmm) client(t *testing.T, sent *atomic.Int64) *fcapi.Client {
	t.Helper()
	var opts []fcapi.Option
	if sent != nil {
		opts = append(opts, fcapi.WithRoundTripper(func(next http.RoundTripper) http.RoundTripper {
			return countingTransport{next: next, n: sent}
		}))
	}
	c, err := fcapi.New(m.Sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (ct countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ct.n.Add(1)
	return ct.next.RoundTrip(r)
}

// waitOutput waits for want on the VMM's stdout (its serial console).
func (m *vmm) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.Stdout.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("console never showed %q; stdout %q, stderr %q", want, m.Stdout.String(), m.Stderr.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// boot configures a 1-vCPU guest that prints msg and halts, with a
// placeholder drive, and starts it.
func boot(t *testing.T, m *vmm, c *fcapi.Client, msg string) {
	t.Helper()
	ctx := t.Context()
	kernel := testutil.GuestKernel(t, guest.Options{Message: msg, Mode: guest.Halt})
	placeholder := filepath.Join(m.Dir, "placeholder.img")
	if err := os.WriteFile(placeholder, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 1, MemSizeMiB: 64}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutBootSource(ctx, fcapi.BootSource{KernelImagePath: kernel, BootArgs: "console=ttyS0"}); err != nil {
		t.Fatal(err)
	}
	if err := c.PutDrive(ctx, fcapi.Drive{DriveID: "slot0", PathOnHost: placeholder}); err != nil {
		t.Fatal(err)
	}
	if err := c.InstanceStart(ctx); err != nil {
		t.Fatal(err)
	}
	m.waitOutput(t, msg)
}

// expectedVersion asks the binary for its release.
func expectedVersion(t *testing.T, tg target, bin string) fcapi.Version {
	t.Helper()
	if tg.fake {
		return tg.version
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	ver, err := fcapi.ParseVersion(strings.TrimPrefix(first, "Firecracker "))
	if err != nil {
		t.Fatal(err)
	}
	return ver
}

func TestIntegrationLifecycle(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			bin := tg.bin(t)
			m := spawn(t, bin, tg.fakefc)
			c := m.client(t, nil)
			ctx := t.Context()
			boot(t, m, c, "kindling fcapi lifecycle")

			info, err := c.GetInstanceInfo(ctx)
			if err != nil || info.State != fcapi.StateRunning {
				t.Fatalf("instance info = %+v, %v; want Running", info, err)
			}
			if err := c.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			if info, err := c.GetInstanceInfo(ctx); err != nil || info.State != fcapi.StatePaused {
				t.Fatalf("after pause: %+v, %v", info, err)
			}
			snap, mem := filepath.Join(m.Dir, "vm.snap"), filepath.Join(m.Dir, "vm.mem")
			if err := c.CreateSnapshot(ctx, fcapi.SnapshotCreate{SnapshotType: fcapi.SnapshotFull, SnapshotPath: snap, MemFilePath: mem}); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{snap, mem} {
				if _, err := os.Stat(p); err != nil {
					t.Errorf("snapshot file: %v", err)
				}
			}
			if err := c.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			if info, err := c.GetInstanceInfo(ctx); err != nil || info.State != fcapi.StateRunning {
				t.Fatalf("after resume: %+v, %v", info, err)
			}

			data := filepath.Join(m.Dir, "data.img")
			if err := os.WriteFile(data, make([]byte, 8192), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := c.PatchDrive(ctx, fcapi.PartialDrive{DriveID: "slot0", PathOnHost: data}); err != nil {
				t.Fatal(err)
			}
			if err := c.FlushMetrics(ctx); err != nil && !errors.Is(err, fcapi.ErrBadRequest) {
				// Without a metrics file Firecracker may answer 400; any
				// other failure is a bug.
				t.Fatal(err)
			}
			if err := c.SendCtrlAltDel(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestIntegrationVersionShaping(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			bin := tg.bin(t)
			m := spawn(t, bin, tg.fakefc)
			var sent atomic.Int64
			c := m.client(t, &sent)
			ctx := t.Context()
			want := expectedVersion(t, tg, bin)
			got, err := c.Version(ctx)
			if err != nil || got != want {
				t.Fatalf("Version = %v, %v; want %v", got, err, want)
			}
			before := sent.Load()
			err = c.PutMemoryHotplug(ctx, fcapi.MemoryHotplugConfig{TotalSizeMiB: 1024})
			if got.Less(fcapi.MustParseVersion("1.14.0")) {
				var nse *fcapi.NotSupportedError
				if !errors.As(err, &nse) || nse.Need != fcapi.MustParseVersion("1.14.0") || nse.Have != got {
					t.Fatalf("PutMemoryHotplug on %v = %v, want *NotSupportedError", got, err)
				}
				if n := sent.Load() - before; n != 0 {
					t.Errorf("a refused call sent %d requests", n)
				}
			} else {
				if errors.Is(err, fcapi.ErrNotSupported) {
					t.Fatalf("PutMemoryHotplug on %v refused: %v", got, err)
				}
				if n := sent.Load() - before; n != 1 {
					t.Errorf("sent %d requests, want 1", n)
				}
			}
			// A huge-pages-free machine config is accepted by every release:
			// the unset field is not sent to releases that lack it.
			if err := c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 1, MemSizeMiB: 64}); err != nil {
				t.Fatal(err)
			}
			mc, err := c.GetMachineConfig(ctx)
			if err != nil || mc.VCPUCount != 1 || mc.MemSizeMiB != 64 {
				t.Fatalf("GetMachineConfig = %+v, %v", mc, err)
			}
		})
	}
}

func TestIntegrationSnapshotRestore(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			bin := tg.bin(t)
			ctx := t.Context()
			src := spawn(t, bin, tg.fakefc)
			c := src.client(t, nil)
			boot(t, src, c, "kindling fcapi restore")
			if err := c.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			snap, mem := filepath.Join(src.Dir, "vm.snap"), filepath.Join(src.Dir, "vm.mem")
			if err := c.CreateSnapshot(ctx, fcapi.SnapshotCreate{SnapshotPath: snap, MemFilePath: mem}); err != nil {
				t.Fatal(err)
			}
			src.Kill()

			dst := spawn(t, bin, tg.fakefc)
			d := dst.client(t, nil)
			// TrackDirtyPages goes out as enable_diff_snapshots before 1.13
			// and as track_dirty_pages after; the memory backend as
			// mem_backend (1.1+).
			err := d.LoadSnapshot(ctx, fcapi.SnapshotLoad{
				SnapshotPath:    snap,
				MemBackend:      fcapi.MemoryBackend{BackendType: fcapi.MemoryBackendFile, BackendPath: mem},
				TrackDirtyPages: true,
				ResumeVM:        true,
			})
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, dst.Stderr.String())
			}
			info, err := d.GetInstanceInfo(ctx)
			if err != nil || info.State != fcapi.StateRunning {
				t.Fatalf("restored instance = %+v, %v; want Running", info, err)
			}
			cfg, err := d.GetVMConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MachineConfig == nil || cfg.MachineConfig.MemSizeMiB != 64 {
				t.Errorf("restored vm config machine-config = %+v, want 64 MiB", cfg.MachineConfig)
			}
		})
	}
}

// TestIntegrationErrors checks that a wrong socket path, a dead VMM, a 400
// and an unsupported release give four distinct errors.
func TestIntegrationErrors(t *testing.T) {
	for _, tg := range targets() {
		t.Run(tg.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			bin := tg.bin(t)
			ctx := t.Context()
			kinds := []error{fcapi.ErrUnavailable, fcapi.ErrBadRequest, fcapi.ErrUnsupportedVersion, fcapi.ErrNotSupported}
			only := func(t *testing.T, err, kind error) {
				t.Helper()
				if err == nil {
					t.Fatalf("no error, want %v", kind)
				}
				t.Logf("%v", err)
				for _, k := range kinds {
					if errors.Is(err, k) != (k == kind) {
						t.Errorf("error %q: errors.Is(%v) = %v", err, k, errors.Is(err, k))
					}
				}
			}

			t.Run("wrong socket path", func(t *testing.T) {
				c, err := fcapi.New(filepath.Join(testutil.ShortTempDir(t), "nope.sock"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, err = c.Version(ctx)
				only(t, err, fcapi.ErrUnavailable)
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("error %q does not say the socket is missing", err)
				}
			})
			t.Run("dead VMM", func(t *testing.T) {
				m := spawn(t, bin, tg.fakefc)
				c := m.client(t, nil)
				if _, err := c.Version(ctx); err != nil {
					t.Fatal(err)
				}
				m.Kill()
				err := c.Pause(ctx)
				only(t, err, fcapi.ErrUnavailable)
			})
			t.Run("400", func(t *testing.T) {
				m := spawn(t, bin, tg.fakefc)
				c := m.client(t, nil)
				err := c.PutDrive(ctx, fcapi.Drive{DriveID: "rootfs", PathOnHost: filepath.Join(m.Dir, "missing.img"), IsRootDevice: true})
				only(t, err, fcapi.ErrBadRequest)
				var apiErr *fcapi.APIError
				if !errors.As(err, &apiErr) || apiErr.Path != "/drives/rootfs" || apiErr.FaultMessage == "" {
					t.Errorf("error = %#v, want an *APIError for PUT /drives/rootfs with a fault message", err)
				}
			})
			t.Run("unsupported release", func(t *testing.T) {
				if !tg.fake {
					t.Skip("needs the fake to emulate a pre-1.0 release")
				}
				m := spawn(t, bin, `{"version":"0.25.0"}`)
				c := m.client(t, nil)
				_, err := c.Version(ctx)
				only(t, err, fcapi.ErrUnsupportedVersion)
				if want := "unsupported Firecracker version 0.25.0: kindling needs 1.0 or newer"; err.Error() != want {
					t.Errorf("error = %q, want %q", err, want)
				}
				if err := c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 1, MemSizeMiB: 64}); !errors.Is(err, fcapi.ErrUnsupportedVersion) {
					t.Errorf("PutMachineConfig = %v, want ErrUnsupportedVersion", err)
				}
			})
			t.Run("VMM dies mid-request", func(t *testing.T) {
				if !tg.fake {
					t.Skip("needs the fake's exit_at fault")
				}
				m := spawn(t, bin, `{"version":"1.14.2","exit_at":3}`)
				c := m.client(t, nil)
				if _, err := c.Version(ctx); err != nil { // request 2 (1 was the readiness check)
					t.Fatal(err)
				}
				err := c.Pause(ctx)
				only(t, err, fcapi.ErrUnavailable)
			})
		})
	}
}

func ExampleNew() {
	ctx := context.Background()
	c, err := fcapi.New("/run/kindling/vm1/api.sock", fcapi.WithTimeout(5*time.Second))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if err := c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 2, MemSizeMiB: 512}); err != nil {
		panic(err)
	}
	if ok, _ := c.Supports(ctx, fcapi.FeatureHugePages); ok {
		_ = c.PatchMachineConfig(ctx, fcapi.MachineConfigPatch{HugePages: fcapi.HugePages2M})
	}
	if err := c.InstanceStart(ctx); err != nil {
		panic(err)
	}
}
