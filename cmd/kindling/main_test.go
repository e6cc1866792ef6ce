package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		want     int
		wantLine string // "" for no output
	}{
		{"success", nil, 0, ""},
		{"failure", errors.New(`sandbox "x": not found`), 1, `kindling: sandbox "x": not found`},
		{"usage", usageErrorf("kindling ps", "unknown flag: --x"), 2, `kindling: unknown flag: --x: run 'kindling ps --help'`},
		{"wrapped usage", fmt.Errorf("outer: %w", usageErrorf("kindling", "no command given")), 2, `kindling: outer: no command given: run 'kindling --help'`},
		{"silent status", &exitStatusError{code: 130}, 130, ""},
		{"status with reason", &exitStatusError{code: 3, err: errors.New("firecracker exited with status 3")}, 3, "kindling: firecracker exited with status 3"},
		{"joined errors on one line", errors.Join(errors.New("a failed"), errors.New("b failed")), 1, "kindling: a failed; b failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := exitCode(tt.err, &stderr); got != tt.want {
				t.Errorf("exitCode = %d, want %d", got, tt.want)
			}
			want := ""
			if tt.wantLine != "" {
				want = tt.wantLine + "\n"
			}
			if stderr.String() != want {
				t.Errorf("stderr = %q, want %q", stderr.String(), want)
			}
		})
	}
}

func TestVMMExit(t *testing.T) {
	tests := []struct {
		name     string
		exit     *sandbox.Exit
		kept     bool
		wantCode int
		wantMsg  string
	}{
		{"removed by its monitor", nil, false, 0, ""},
		{"clean power-off", &sandbox.Exit{Code: 0}, true, 0, ""},
		{"exit status", &sandbox.Exit{Code: 3}, true, 3, "sandbox web: firecracker exited with status 3: see 'kindling logs --vmm web'"},
		{"exit status, removed", &sandbox.Exit{Code: 3}, false, 3, "sandbox web: firecracker exited with status 3"},
		{"out of range status", &sandbox.Exit{Code: -1}, false, 1, "sandbox web: firecracker exited with status -1"},
		{"signal by Go name", &sandbox.Exit{Code: -1, Signal: "killed"}, false, 137, "sandbox web: firecracker was killed by killed"},
		{"signal by SIG name", &sandbox.Exit{Code: -1, Signal: "SIGTERM"}, false, 143, "sandbox web: firecracker was killed by SIGTERM"},
		{"unknown signal", &sandbox.Exit{Code: -1, Signal: "weird"}, false, 1, "sandbox web: firecracker was killed by weird"},
		{"never started", &sandbox.Exit{Code: -1, Error: "kernel refused"}, false, 1, "sandbox web: kernel refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := vmmExit("web", tt.exit, tt.kept)
			var stderr bytes.Buffer
			if got := exitCode(err, &stderr); got != tt.wantCode {
				t.Errorf("exit code = %d, want %d (err %v)", got, tt.wantCode, err)
			}
			if got := strings.TrimPrefix(strings.TrimSuffix(stderr.String(), "\n"), "kindling: "); got != tt.wantMsg {
				t.Errorf("message = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestParseFirecrackerVersion(t *testing.T) {
	tests := []struct{ out, want string }{
		{"Firecracker v1.14.2\n\n", "v1.14.2"},
		{"Firecracker v1.7.0\nsupported snapshot versions: v1.0.0\n", "v1.7.0"},
		{"hello\n", ""},
		{"", ""},
		{"v\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.out, func(t *testing.T) {
			if got := parseFirecrackerVersion(tt.out); got != tt.want {
				t.Errorf("parseFirecrackerVersion(%q) = %q, want %q", tt.out, got, tt.want)
			}
		})
	}
}

// TestCommandsDocumented checks that every command has a description and
// examples, and that the commands that print data take --json.
func TestCommandsDocumented(t *testing.T) {
	printsData := map[string]bool{
		"kindling run": true, "kindling create": true, "kindling start": true,
		"kindling ps": true, "kindling inspect": true, "kindling threads": true,
		"kindling drive add": true, "kindling restore": true, "kindling gc": true,
		"kindling version": true,
	}
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		seen++
		t.Run(c.CommandPath(), func(t *testing.T) {
			if c.Short == "" || c.Long == "" {
				t.Errorf("%s: no Short or Long description", c.CommandPath())
			}
			if c.Example == "" {
				t.Errorf("%s: no examples", c.CommandPath())
			}
			if printsData[c.CommandPath()] && c.Flags().Lookup("json") == nil {
				t.Errorf("%s prints data but has no --json", c.CommandPath())
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCommand(io.Discard, io.Discard))
	if seen < 20 {
		t.Errorf("walked %d commands, want at least 20", seen)
	}
}

func TestSpecFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "web.toml")
	if err := os.WriteFile(cfg, []byte("name = \"cfg\"\nkernel = \"k.elf\"\ncpus = 2\nmemory = \"1G\"\nnet = [\"auto\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, s sandbox.Spec)
		usage bool // want a usage error
	}{
		{"defaults", nil, func(t *testing.T, s sandbox.Spec) {
			if s.VCPUs != 0 || s.MemoryMiB != 0 || s.Kernel != "" || s.Rootfs != nil {
				t.Errorf("spec = %+v, want zero values", s)
			}
		}, false},
		{"every flag", []string{"--name", "web", "--kernel", "/k", "--initrd", "/i", "--kernel-args", "quiet",
			"--rootfs", "/r.img:ro", "--drive", "/a.img", "--drive", "/b.img:ro", "--cpus", "4", "--memory", "2G",
			"--smt", "--net", "auto", "--net", "tap=tap0,mac=02:00:00:00:00:09", "--netns", "ns1", "--vsock", "7",
			"--hotplug-slots", "3", "--hotplug-writable", "--firecracker", "/fc", "--jailer", "/j", "--wait-console", "login:"},
			func(t *testing.T, s sandbox.Spec) {
				want := sandbox.Spec{ID: "web", Kernel: "/k", Initrd: "/i", KernelArgs: "quiet",
					Rootfs: &sandbox.Disk{Path: "/r.img", ReadOnly: true},
					Drives: []sandbox.Disk{{Path: "/a.img"}, {Path: "/b.img", ReadOnly: true}},
					VCPUs:  4, MemoryMiB: 2048, SMT: true,
					Net:   []sandbox.Net{{Auto: true}, {Tap: "tap0", MAC: "02:00:00:00:00:09"}},
					NetNS: "ns1", VsockCID: 7, Placeholders: 3, HotplugWritable: true, Firecracker: "/fc", Jailer: "/j", WaitConsole: "login:"}
				if !reflect.DeepEqual(s, want) {
					t.Errorf("spec =\n%+v\nwant\n%+v", s, want)
				}
			}, false},
		{"config file", []string{"--config", cfg}, func(t *testing.T, s sandbox.Spec) {
			if s.ID != "cfg" || s.VCPUs != 2 || s.MemoryMiB != 1024 || len(s.Net) != 1 || !s.Net[0].Auto {
				t.Errorf("spec = %+v", s)
			}
			if s.Kernel != filepath.Join(dir, "k.elf") {
				t.Errorf("kernel = %q, want it relative to the config file", s.Kernel)
			}
		}, false},
		{"flags override the config file", []string{"--config", cfg, "--cpus", "1", "--net", "tap=t1", "--kernel", "other.elf"}, func(t *testing.T, s sandbox.Spec) {
			if s.ID != "cfg" || s.VCPUs != 1 || s.MemoryMiB != 1024 || len(s.Net) != 1 || s.Net[0].Tap != "t1" || s.Kernel != "other.elf" {
				t.Errorf("spec = %+v", s)
			}
		}, false},
		{"CNI networks and ports", []string{"--net", "cni:a", "--net", "cni:b", "-p", "8080:80", "--publish", "53:53/udp",
			"--cni-conf-dir", "/etc/x", "--cni-bin-dir", "/p1:/p2"}, func(t *testing.T, s sandbox.Spec) {
			want := sandbox.Spec{CNINetworks: []string{"a", "b"}, Ports: []string{"8080:80", "53:53/udp"},
				CNIConfDir: "/etc/x", CNIBinDirs: []string{"/p1", "/p2"}}
			if !reflect.DeepEqual(s, want) {
				t.Errorf("spec =\n%+v\nwant\n%+v", s, want)
			}
		}, false},
		{"empty kernel", []string{"--kernel="}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sf specFlags
			cmd := &cobra.Command{Use: "create"}
			sf.register(cmd.Flags())
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatalf("parse %q: %v", tt.args, err)
			}
			s, err := sf.spec(cmd)
			var u *usageError
			if tt.usage {
				if !errors.As(err, &u) {
					t.Fatalf("spec: err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("spec: %v", err)
			}
			tt.check(t, s)
		})
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer = testutil.SyncBuffer

// TestRunInterrupted runs a foreground 'kindling run' in this process and
// cancels it as Ctrl-C does: the sandbox is stopped (and removed with
// --rm) and the exit status is 130.
func TestRunInterrupted(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := fakeFirecracker(t)
	if real := os.Getenv(testutil.EnvFirecracker); real != "" && !testing.Short() {
		fc = real
	}
	kernel := testutil.GuestKernel(t, guest.Options{Message: "interrupt me", Mode: guest.Halt})
	for _, rm := range []bool{false, true} {
		t.Run(fmt.Sprintf("rm=%v", rm), func(t *testing.T) {
			root := testutil.ShortTempDir(t)
			args := []string{"--root", root, "run", "--name", "fg", "--kernel", kernel, "--firecracker", fc}
			if rm {
				args = append(args, "--rm")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() { done <- exitCode(run(ctx, args, &stdout, &stderr), &stderr) }()

			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(stdout.String(), "interrupt me") {
				if time.Now().After(deadline) {
					cancel()
					<-done
					t.Fatalf("the console never showed the guest's message; stdout %q, stderr %q", stdout.String(), stderr.String())
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			select {
			case code := <-done:
				if code != exitInterrupted {
					t.Errorf("exit status = %d, want %d; stderr %q", code, exitInterrupted, stderr.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatal("run did not return after the interrupt")
			}
			if stderr.String() != "" {
				t.Errorf("stderr = %q, want nothing", stderr.String())
			}
			rt, err := sandbox.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			in, err := rt.Inspect(context.Background(), "fg")
			switch {
			case rm && !errors.Is(err, sandbox.ErrNotFound):
				t.Errorf("with --rm the sandbox is still there: %+v, %v", in, err)
			case !rm && err != nil:
				t.Errorf("inspect: %v", err)
			case !rm && in.Status != sandbox.Exited:
				t.Errorf("status = %s, want exited", in.Status)
			}
			if !rm {
				if err := rt.Remove(context.Background(), "fg", true); err != nil {
					t.Error(err)
				}
			}
			if left := leftovers(root); len(left) > 0 {
				t.Errorf("left behind: %s", strings.Join(left, "; "))
			}
		})
	}
}
