package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// TestMain serves three roles of this test binary: a sandbox monitor
// (the runtime re-executes os.Executable(), which is this binary, also when
// a script's "kindling" started it), the "kindling" command of the scripts
// (testscript re-executes the binary under that name), and the tests.
func TestMain(m *testing.M) {
	sandbox.MonitorMain()
	// The rig runs the fake Firecracker without the jailer (as
	// testutil.Main does for the other packages).
	if _, ok := os.LookupEnv(sandbox.EnvNoJailer); !ok {
		os.Setenv(sandbox.EnvNoJailer, "1")
	}
	testscript.Main(cleanupM{m}, map[string]func(){
		"kindling": func() {
			sandbox.MonitorMain()
			os.Exit(mainExitCode())
		},
	})
}

// fakeBuild remembers the fake Firecracker's build directory so that it is
// removed after the tests (what testutil.Main does, which cannot be used
// here because testscript.Main runs the tests).
var fakeBuild struct {
	mu  sync.Mutex // guards dir
	dir string
}

func fakeFirecracker(t *testing.T) string {
	p := testutil.FakeFirecracker(t)
	fakeBuild.mu.Lock()
	fakeBuild.dir = filepath.Dir(p)
	fakeBuild.mu.Unlock()
	return p
}

type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	testutil.CleanupBuilds()
	fakeBuild.mu.Lock()
	defer fakeBuild.mu.Unlock()
	if fakeBuild.dir != "" {
		if err := os.RemoveAll(fakeBuild.dir); err != nil {
			fmt.Fprintf(os.Stderr, "remove fake firecracker build: %v\n", err)
		}
	}
	return code
}

// TestScriptsFake runs the scripts in testdata/script against the fake
// Firecracker.
func TestScriptsFake(t *testing.T) {
	runScripts(t, fakeFirecracker(t), "fake")
}

// TestScriptsReal runs the same scripts against the real Firecracker named
// by $KINDLING_FIRECRACKER (skipped when it is unset, or with -short).
func TestScriptsReal(t *testing.T) {
	runScripts(t, testutil.Firecracker(t), "real")
}

// runScripts runs every script with its own short state root and fc as
// the Firecracker. kind ("fake" or "real") is a condition scripts can test.
func runScripts(t *testing.T, fc, kind string) {
	runScriptsIn(t, filepath.Join("testdata", "script"), fc, kind)
}

// runScriptsIn runs the scripts in dir as runScripts does.
func runScriptsIn(t *testing.T, dir, fc, kind string) {
	// The jailer that the jailer-by-default scripts use: the fake one with
	// the fake Firecracker, $KINDLING_JAILER with the real one; root only.
	defaultJailer := ""
	if os.Geteuid() == 0 {
		if kind == "fake" {
			defaultJailer = testutil.FakeJailer(t)
		} else {
			defaultJailer = os.Getenv(testutil.EnvJailer)
		}
	}
	testscript.Run(t, testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			root, err := os.MkdirTemp("", "kd")
			if err != nil {
				return err
			}
			env.Setenv("KINDLING_ROOT", root)
			env.Setenv("KINDLING_FIRECRACKER", fc)
			// Scripts set the fake's settings in FAKEFC: let them through to it.
			env.Setenv("KINDLING_PASS_ENV", "FAKEFC")
			// As root sandboxes run under the jailer by default; the
			// scripts name it where they want it (jailer.txtar clears
			// this to test the default).
			env.Setenv("KINDLING_NO_JAILER", "1")
			env.Setenv("TEST_JAILER", defaultJailer)
			if kind == "real" {
				env.Setenv("KINDLING_JAILER", os.Getenv(testutil.EnvJailer))
			}
			// The directory holding the scripts' kindling, for scripts that
			// narrow PATH.
			kd, err := exec.LookPath("kindling")
			if err != nil {
				return err
			}
			env.Setenv("KINDLING_BINDIR", filepath.Dir(kd))
			// A short tag unique to this script, for host-wide names (taps,
			// network namespaces) that must not clash between scripts; the
			// names the scripts build from it are removed at the end.
			tag := root[len(root)-6:]
			env.Setenv("TAG", tag)
			env.Defer(func() { removeHostNet(tag) })
			env.Defer(func() {
				left := leftovers(root)
				if err := os.RemoveAll(root); err != nil {
					left = append(left, fmt.Sprintf("remove root: %v", err))
				}
				if len(left) > 0 {
					env.T().Fatal("the script left behind: " + strings.Join(left, "; "))
				}
			})
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			case "fake", "real":
				return cond == kind, nil
			case "cniplugins":
				// Debian's bridge and host-local CNI plugins.
				for _, p := range []string{"bridge", "host-local"} {
					if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
						return false, nil
					}
				}
				return true, nil
			case "simguest":
				// The fake Firecracker's simulated guest: root, loop
				// devices, a static busybox and mkfs.ext4 for the image.
				return kind == "fake" && simGuestReady() == nil, nil
			case "kvm":
				// The host has /dev/kvm (kindling check's kvm line).
				_, err := os.Stat("/dev/kvm")
				return err == nil, nil
			case "defaultjailer":
				// A jailer for the fake or the real Firecracker, as root.
				return defaultJailer != "", nil
			case "jailer":
				// The jailer runs the real Firecracker only, as root.
				return kind == "real" && os.Getenv(testutil.EnvJailer) != "" && os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"guest":        cmdGuest,
			"exitcode":     cmdExitCode,
			"waitstatus":   cmdWaitStatus,
			"waitconsole":  cmdWaitConsole,
			"capture":      cmdCapture,
			"jsonget":      cmdJSONGet,
			"agentroot":    cmdAgentRoot,
			"busyboximage": cmdBusyboxImage,
			"apiget":       cmdAPIGet,
			"nothingleft": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 0 {
					ts.Fatalf("usage: nothingleft")
				}
				if left := leftovers(ts.Getenv("KINDLING_ROOT")); len(left) > 0 {
					ts.Fatalf("left behind: %s", strings.Join(left, "; "))
				}
			},
		},
	})
}

// cmdGuest writes a test guest: guest FILE MESSAGE [halt|poweroff].
func cmdGuest(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: guest FILE MESSAGE [halt|poweroff]")
	}
	o := guest.Options{Message: args[1], Mode: guest.Halt}
	if len(args) == 3 {
		switch args[2] {
		case "halt":
		case "poweroff":
			o.Mode = guest.PowerOff
		default:
			ts.Fatalf("guest: unknown mode %q (halt or poweroff)", args[2])
		}
	}
	ts.Check(guest.WriteFile(ts.MkAbs(args[0]), o))
}

// cmdExitCode runs a command and checks its exit status:
// exitcode N COMMAND [ARGS...]. Its stdout and stderr are kept for the
// commands that follow, as exec does.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("run %s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdWaitStatus waits until a sandbox has a status, or is gone:
// waitstatus ID STATUS|gone.
func cmdWaitStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitstatus ID STATUS|gone")
	}
	rt, err := sandbox.Open(ts.Getenv("KINDLING_ROOT"))
	ts.Check(err)
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		in, err := rt.Inspect(ctx, args[0])
		switch {
		case errors.Is(err, sandbox.ErrNotFound):
			last = "gone"
		case err != nil:
			ts.Fatalf("inspect %s: %v", args[0], err)
		default:
			last = string(in.Status)
		}
		if last == args[1] {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.Fatalf("sandbox %s is still %s, want %s", args[0], last, args[1])
}

// cmdWaitConsole waits until a sandbox's console log shows a text:
// waitconsole ID TEXT.
func cmdWaitConsole(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitconsole ID TEXT")
	}
	rt, err := sandbox.Open(ts.Getenv("KINDLING_ROOT"))
	ts.Check(err)
	deadline := time.Now().Add(10 * time.Second)
	var b strings.Builder
	for time.Now().Before(deadline) {
		b.Reset()
		// The sandbox may not exist yet: a command in the background is
		// creating it.
		if rc, err := rt.Console(context.Background(), args[0], sandbox.LogOptions{}); err == nil {
			_, err := io.Copy(&b, rc)
			rc.Close()
			ts.Check(err)
			if strings.Contains(b.String(), args[1]) {
				return
			}
		} else if !errors.Is(err, sandbox.ErrNotFound) {
			ts.Fatalf("inspect %s: %v", args[0], err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.Fatalf("console of %s does not show %q; it holds %q", args[0], args[1], b.String())
}

// cmdCapture sets an environment variable to the last command's stdout,
// trimmed: capture VAR.
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: capture VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

// cmdJSONGet sets an environment variable to a value in the JSON the last
// command printed: jsonget PATH VAR, PATH like 0.taps.0.name.
func cmdJSONGet(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: jsonget PATH VAR")
	}
	var v any
	ts.Check(json.Unmarshal([]byte(ts.ReadFile("stdout")), &v))
	for _, k := range strings.Split(args[0], ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				ts.Fatalf("jsonget %s: no key %q", args[0], k)
			}
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				ts.Fatalf("jsonget %s: no element %q in an array of %d", args[0], k, len(x))
			}
			v = x[i]
		default:
			ts.Fatalf("jsonget %s: %q is not in a %T", args[0], k, v)
		}
	}
	switch x := v.(type) {
	case string:
		ts.Setenv(args[1], x)
	case float64:
		ts.Setenv(args[1], strconv.FormatFloat(x, 'f', -1, 64))
	default:
		b, _ := json.Marshal(x)
		ts.Setenv(args[1], string(b))
	}
}

// cmdAPIGet asks a Firecracker API socket for a path and prints the
// answer's body: apiget SOCKET PATH.
func cmdAPIGet(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: apiget SOCKET PATH")
	}
	c := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", args[0])
		}},
	}
	resp, err := c.Get("http://localhost" + args[1])
	ts.Check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	ts.Check(err)
	if resp.StatusCode != http.StatusOK {
		ts.Fatalf("GET %s: %s: %s", args[1], resp.Status, b)
	}
	fmt.Fprintf(ts.Stdout(), "%s\n", b)
}

// leftovers reports, and then removes, what is left under a state root:
// sandboxes, processes working in it, and files. It returns nothing when
// the root is clean.
func leftovers(root string) []string {
	var left []string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if rt, err := sandbox.Open(root); err == nil {
		infos, err := rt.List(ctx, sandbox.ListOptions{})
		if err != nil {
			left = append(left, err.Error())
		}
		for _, in := range infos {
			left = append(left, fmt.Sprintf("sandbox %s (%s)", in.ID, in.Status))
			if err := rt.Remove(ctx, in.ID, true); err != nil {
				left = append(left, err.Error())
			}
		}
	}
	for _, p := range processesUnder(root) {
		left = append(left, fmt.Sprintf("process %d (%s)", p.PID, strings.Join(p.Args, " ")))
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		switch e.Name() {
		case ".kernels": // the demo guest, kept for the next run
			continue
		case ".releases": // firecracker releases asked by restores, kept
			continue
		case ".locks":
			if locks, _ := os.ReadDir(filepath.Join(root, e.Name())); len(locks) == 0 {
				continue
			}
		case imagesDir: // the image store: only images left in it count
			ims, _ := os.ReadDir(filepath.Join(root, e.Name(), "sha256"))
			for _, im := range ims {
				left = append(left, "image "+im.Name())
			}
			continue
		}
		left = append(left, "file "+e.Name())
	}
	return append(left, sandbox.JailLeftoversOfRoot(root)...)
}

// removeHostNet deletes the tap "kt<tag>" and the network namespace
// "kn<tag>" that a root-only script may have created, if they are left.
func removeHostNet(tag string) {
	if os.Geteuid() != 0 {
		return
	}
	if _, err := os.Stat("/sys/class/net/kt" + tag); err == nil {
		exec.Command("ip", "link", "del", "kt"+tag).Run()
	}
	if _, err := os.Stat("/run/netns/kn" + tag); err == nil {
		exec.Command("ip", "netns", "del", "kn"+tag).Run()
	}
	// net_cni_root: its sandbox's namespace, and its network's leases and
	// libcni cache entries.
	if _, err := os.Stat("/run/netns/kindling-cni" + tag); err == nil {
		exec.Command("ip", "netns", "del", "kindling-cni"+tag).Run()
	}
	os.RemoveAll("/var/lib/cni/networks/kn" + tag)
	cached, _ := filepath.Glob("/var/lib/cni/results/kn" + tag + "-*")
	for _, f := range cached {
		os.Remove(f)
	}
}

// processesUnder lists the processes whose working directory, command
// line or environment names root or a path under it.
func processesUnder(root string) []kunix.Proc {
	ps, _ := kunix.ProcessesUsingDir(root)
	return ps
}
