package guest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestBootFirecracker boots the guest under the real Firecracker named by
// $KINDLING_FIRECRACKER and checks what it prints and whether the VMM exits.
func TestBootFirecracker(t *testing.T) {
	fc := testutil.Firecracker(t)
	tests := []struct {
		name string
		opts guest.Options
	}{
		{"poweroff", guest.Options{Message: "kindling guest says bye", Mode: guest.PowerOff}},
		{"halt", guest.Options{Message: "kindling guest idles", Mode: guest.Halt}},
		{"poweroff long message", guest.Options{Message: strings.Repeat("0123456789abcdef", guest.MaxMessageLen/16), Mode: guest.PowerOff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			vm := startVM(t, fc, testutil.GuestKernel(t, tt.opts))
			want := tt.opts.Output()
			if err := vm.waitOutput(want, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			switch tt.opts.Mode {
			case guest.PowerOff:
				select {
				case <-vm.Done():
				case <-time.After(10 * time.Second):
					t.Fatalf("firecracker still running 10 s after a power-off guest printed its message\n%s", vm.Log())
				}
				if err := vm.WaitErr(); err != nil {
					t.Fatalf("firecracker exited with %v, want status 0\n%s", err, vm.Log())
				}
			case guest.Halt:
				select {
				case <-vm.Done():
					t.Fatalf("firecracker exited (%v) with a halting guest\n%s", vm.WaitErr(), vm.Log())
				case <-time.After(200 * time.Millisecond):
				}
			}
			if got := vm.Stdout.String(); got != want {
				t.Fatalf("console = %q, want %q", got, want)
			}
		})
	}
}

// vm is one Firecracker process under test.
type vm struct{ *testutil.VMM }

func (v *vm) waitOutput(want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(v.Stdout.String(), want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("console %q does not hold %q after %v\n%s", v.Stdout.String(), want, timeout, v.Log())
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// startVM spawns Firecracker with its API socket and log file in a short
// temporary directory, configures it over a plain HTTP client and starts the
// guest. The process is killed and reaped at cleanup.
func startVM(t *testing.T, fc, kernel string) *vm {
	t.Helper()
	v := &vm{testutil.StartVMM(t, testutil.VMMConfig{Path: fc, Args: []string{"--level", "Info"}, LogFile: true})}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", v.Sock)
			},
			DisableKeepAlives: true,
		},
		Timeout: 5 * time.Second,
	}
	t.Cleanup(client.CloseIdleConnections)

	put := func(path, body string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, "http://localhost"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("PUT %s: %v\n%s", path, err, v.Log())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("PUT %s: %s: %s\n%s", path, resp.Status, b, v.Log())
		}
	}
	put("/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`)
	bootSource, err := json.Marshal(map[string]string{"kernel_image_path": kernel, "boot_args": "console=ttyS0"})
	if err != nil {
		t.Fatal(err)
	}
	put("/boot-source", string(bootSource))
	put("/actions", `{"action_type":"InstanceStart"}`)
	return v
}
