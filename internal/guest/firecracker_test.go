package guest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
				case <-vm.done:
				case <-time.After(10 * time.Second):
					t.Fatalf("firecracker still running 10 s after a power-off guest printed its message\n%s", vm.log())
				}
				if vm.waitErr != nil {
					t.Fatalf("firecracker exited with %v, want status 0\n%s", vm.waitErr, vm.log())
				}
			case guest.Halt:
				select {
				case <-vm.done:
					t.Fatalf("firecracker exited (%v) with a halting guest\n%s", vm.waitErr, vm.log())
				case <-time.After(200 * time.Millisecond):
				}
			}
			if got := vm.stdout(); got != want {
				t.Fatalf("console = %q, want %q", got, want)
			}
		})
	}
}

// vm is one Firecracker process under test.
type vm struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when cmd.Wait returns
	waitErr error         // cmd.Wait's result, read after done is closed
	out     *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (v *vm) stdout() string { return v.out.String() }

func (v *vm) log() string {
	b, err := os.ReadFile(v.logPath)
	if err != nil {
		return fmt.Sprintf("(no firecracker log: %v)", err)
	}
	return "firecracker log:\n" + string(b)
}

func (v *vm) waitOutput(want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(v.stdout(), want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("console %q does not hold %q after %v\n%s", v.stdout(), want, timeout, v.log())
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
	dir := testutil.ShortTempDir(t)
	sock := filepath.Join(dir, "api.sock")
	v := &vm{logPath: filepath.Join(dir, "fc.log"), done: make(chan struct{}), out: &syncBuffer{}}
	if err := os.WriteFile(v.logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v.cmd = exec.Command(fc, "--api-sock", sock, "--log-path", v.logPath, "--level", "Info")
	v.cmd.Stdout = v.out
	var stderr syncBuffer
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start firecracker: %v", err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		_ = v.cmd.Process.Kill()
		<-v.done
	})

	client := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
		Timeout: 5 * time.Second,
	}
	t.Cleanup(client.CloseIdleConnections)

	// Wait for the API socket with a tight retry, giving up if the VMM dies.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-v.done:
			t.Fatalf("firecracker exited before serving its API: %v\nstderr: %s\n%s", v.waitErr, stderr.String(), v.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("firecracker API socket not ready after 5 s: %v\n%s", err, v.log())
		}
		time.Sleep(time.Millisecond)
	}

	put := func(path, body string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, "http://localhost"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("PUT %s: %v\n%s", path, err, v.log())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("PUT %s: %s: %s\n%s", path, resp.Status, b, v.log())
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
