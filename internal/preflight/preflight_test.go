package preflight

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// fakeHost is a Host whose /dev, /proc and /sys are directories under a
// temporary directory, holding the files given (path → content; a path
// ending in "/" is a directory).
func fakeHost(t *testing.T, files map[string]string) *Host {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"dev", "proc", "sys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &Host{Dev: filepath.Join(dir, "dev"), Proc: filepath.Join(dir, "proc"), Sys: filepath.Join(dir, "sys")}
}

// script writes an executable shell script and returns its path.
func script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A Firecracker that answers like the real one, and one that answers like
// kindling's fake (same --version, "(fake)" in --help).
const (
	realFC = `case "$1" in --version) printf 'Firecracker v1.14.2\n\n';; --help) printf 'Firecracker v1.14.2\n\noptional arguments:\n';; esac`
	fakeFC = `case "$1" in --version) printf 'Firecracker v1.14.2\n\n';; --help) printf 'Firecracker v1.14.2 (fake)\n\nflags: --api-sock\n';; esac`
)

// denied is an openFile that refuses everything, as for a user without
// access (root cannot be refused by file modes).
func denied(name string, _ int, _ os.FileMode) (*os.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
}

func TestCheckKVM(t *testing.T) {
	const hypervisorCPU = "processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n"
	tests := []struct {
		name       string
		files      map[string]string
		deny       bool
		fake       bool
		want       Status
		detail     string // a part of the detail
		fix        string // a part of the fix
		wantDetail string // the exact detail, when set
	}{
		{name: "usable", files: map[string]string{"dev/kvm": ""}, want: OK, wantDetail: "/dev/kvm is usable"},
		{name: "usable with module", files: map[string]string{"dev/kvm": "", "sys/module/kvm_intel/parameters/nested": "Y\n"},
			want: OK, detail: "is usable (kvm_intel, nested: Y)"},
		{name: "usable pvm", files: map[string]string{"dev/kvm": "", "sys/module/kvm_pvm/": ""}, want: OK, detail: "is usable (kvm_pvm)"},
		{name: "missing in a VM", files: map[string]string{"proc/cpuinfo": hypervisorCPU}, want: Fail,
			detail: "/kvm: no such device: this host has no KVM", fix: "enable nested virtualisation for it"},
		{name: "missing with vmx", files: map[string]string{"proc/cpuinfo": "flags\t: fpu vmx\n"}, want: Fail, fix: "modprobe kvm_intel"},
		{name: "missing with svm", files: map[string]string{"proc/cpuinfo": "flags\t: fpu svm\n"}, want: Fail, fix: "modprobe kvm_amd"},
		{name: "missing on bare metal", files: map[string]string{"proc/cpuinfo": "flags\t: fpu sse2\n"}, want: Fail, fix: "in the firmware settings"},
		{name: "missing, no cpuinfo", want: Fail, fix: "enable nested virtualisation or run on bare metal"},
		{name: "missing, fake firecracker", fake: true, want: Warn, fix: "the fake Firecracker found needs no KVM"},
		{name: "not accessible", files: map[string]string{"dev/kvm": ""}, deny: true, want: Fail,
			detail: "/kvm: permission denied for user ", fix: "usermod -aG kvm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, tt.files)
			if tt.deny {
				h.openFile = denied
			}
			r := h.checkKVM(tt.fake)
			if r.Check != "kvm" || r.Status != tt.want {
				t.Fatalf("checkKVM = %+v, want status %s", r.Result, tt.want)
			}
			if tt.wantDetail != "" && r.Detail != filepath.Join(h.Dev, "kvm")+strings.TrimPrefix(tt.wantDetail, "/dev/kvm") {
				t.Errorf("detail %q, want %q", r.Detail, tt.wantDetail)
			}
			if !strings.Contains(r.Detail, tt.detail) || !strings.Contains(r.Fix, tt.fix) {
				t.Errorf("checkKVM = %+v; want detail with %q and fix with %q", r.Result, tt.detail, tt.fix)
			}
			if (r.Status == OK) != (r.Fix == "") {
				t.Errorf("fix %q with status %s", r.Fix, r.Status)
			}
		})
	}
}

func TestPreflight(t *testing.T) {
	testutil.CheckLeaks(t)
	notFound := func(string) (string, error) { return "", errors.New("no firecracker executable found") }
	notFoundErr := func(string) (string, error) { return "", &notFoundError{name: "firecracker"} }
	tests := []struct {
		name  string
		kvm   bool
		fc    string // script body; "" for none
		find  Lookup
		given string
		want  string // the whole message; "" for no error
		is    error
	}{
		{name: "ok", kvm: true, fc: realFC},
		{name: "no firecracker", kvm: true, find: notFoundErr,
			want: "no firecracker executable found: " + FirecrackerHint, is: errdefs.ErrNotFound},
		{name: "no firecracker before no kvm", find: notFound,
			want: "no firecracker executable found: " + FirecrackerHint},
		{name: "given firecracker missing", kvm: true, given: "/nonexistent/firecracker",
			want: "firecracker /nonexistent/firecracker: no such file: give the path of a firecracker executable", is: fs.ErrNotExist},
		{name: "no kvm, real firecracker", fc: realFC,
			want: "/kvm: no such device: this host has no KVM: enable nested virtualisation or run on bare metal", is: errdefs.ErrNotSupported},
		{name: "no kvm, fake firecracker", fc: fakeFC},
		{name: "no kvm, firecracker that fails", fc: "exit 3",
			want: "/kvm: no such device: this host has no KVM: enable nested virtualisation or run on bare metal", is: errdefs.ErrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			if tt.kvm {
				files["dev/kvm"] = ""
			}
			h := fakeHost(t, files)
			h.Firecracker, h.FindFirecracker = tt.given, tt.find
			if tt.fc != "" {
				h.Firecracker = script(t, "firecracker", tt.fc)
			}
			err := h.Preflight(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Preflight = %v, want nil", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Preflight = %v (%T), want an *Error", err, err)
			}
			if got := strings.ReplaceAll(err.Error(), h.Dev, ""); got != tt.want {
				t.Errorf("Preflight = %q\nwant        %q", got, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message has more than one line: %q", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Preflight = %v, does not match %v", err, tt.is)
			}
		})
	}
}

// TestPreflightFakeFirecracker pins the contract with internal/fakefc: its
// --help says "(fake)", so a host without KVM lets it run.
func TestPreflightFakeFirecracker(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := testutil.FakeFirecracker(t)
	h := fakeHost(t, nil)
	h.Firecracker = fc
	if err := h.Preflight(context.Background()); err != nil {
		t.Fatalf("Preflight with the fake Firecracker and no KVM = %v, want nil", err)
	}
	r := h.checkFirecracker(context.Background())
	if r.Status != Warn || !r.fake || !strings.Contains(r.Detail, "kindling's fake Firecracker (v") {
		t.Errorf("checkFirecracker(fake) = %+v, want a warning naming the fake", r.Result)
	}
}

// TestPreflightRealFirecracker: a real Firecracker is not taken for the
// fake (skipped without $KINDLING_FIRECRACKER).
func TestPreflightRealFirecracker(t *testing.T) {
	fc := testutil.Firecracker(t)
	if isFake(context.Background(), fc) {
		t.Fatalf("%s is taken for the fake Firecracker", fc)
	}
	h := fakeHost(t, nil)
	h.Firecracker = fc
	if err := h.Preflight(context.Background()); !errors.Is(err, errdefs.ErrNotSupported) {
		t.Fatalf("Preflight with a real Firecracker and no KVM = %v, want ErrNotSupported", err)
	}
	r := h.checkFirecracker(context.Background())
	if r.Status != OK || !strings.HasPrefix(r.Detail, "firecracker "+fc+": Firecracker v1.") {
		t.Errorf("checkFirecracker(real) = %+v", r.Result)
	}
}

func TestCheckFirecracker(t *testing.T) {
	testutil.CheckLeaks(t)
	tests := []struct {
		name   string
		body   string
		want   Status
		detail string
	}{
		{"real", realFC, OK, ": Firecracker v1.14.2"},
		{"fake", fakeFC, Warn, ": kindling's fake Firecracker (v1.14.2), which runs no VMs"},
		{"too old", `echo "Firecracker v0.25.2"`, Fail, ": release v0.25.2 is older than v1.0, the oldest kindling runs"},
		{"not firecracker", `echo hello`, Fail, `: unexpected --version output "hello"`},
		{"a jailer", `echo "Jailer v1.7.0"`, Fail, ": says it is Jailer v1.7.0, not Firecracker"},
		{"fails", `echo broken >&2; exit 3`, Fail, ": exit status 3: broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, nil)
			h.Firecracker = script(t, "firecracker", tt.body)
			r := h.checkFirecracker(context.Background())
			if r.Status != tt.want || r.Detail != "firecracker "+h.Firecracker+tt.detail {
				t.Errorf("checkFirecracker = %+v\nwant status %s, detail ending %q", r.Result, tt.want, tt.detail)
			}
			if (r.Status == OK) != (r.Fix == "") {
				t.Errorf("fix %q with status %s", r.Fix, r.Status)
			}
		})
	}
}

func TestCheckJailer(t *testing.T) {
	testutil.CheckLeaks(t)
	fc := &release{name: "Firecracker", version: "v1.7.0", major: 1}
	tests := []struct {
		name   string
		body   string // "" for none found
		want   Status
		detail string
	}{
		{"same release", `echo "Jailer v1.7.0"`, OK, "Jailer v1.7.0"},
		{"other release", `echo "Jailer v1.14.2"`, Warn, "release v1.14.2, but firecracker is v1.7.0"},
		{"not a jailer", `echo "Firecracker v1.7.0"`, Warn, "not Jailer"},
		{"none", "", Warn, "no jailer-test executable found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, nil)
			if tt.body == "" {
				h.FindJailer = func(string) (string, error) { return "", &notFoundError{name: "jailer-test"} }
			} else {
				h.Jailer = script(t, "jailer", tt.body)
			}
			r := h.checkJailer(context.Background(), fc)
			if r.Status != tt.want || !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("checkJailer = %+v, want status %s and detail with %q", r, tt.want, tt.detail)
			}
		})
	}
}

func TestCheckCgroup(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		want   Status
		detail string
	}{
		{"v2", map[string]string{"sys/fs/cgroup/cgroup.controllers": "cpu memory\n"}, OK, "cgroup v2 (unified"},
		{"hybrid", map[string]string{"sys/fs/cgroup/unified/cgroup.controllers": ""}, Warn, "hybrid"},
		{"v1", map[string]string{"sys/fs/cgroup/cpu/": ""}, Warn, "cgroup v1 only"},
		{"none", nil, Warn, "no cgroup file system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fakeHost(t, tt.files).checkCgroup()
			if r.Status != tt.want || !strings.Contains(r.Detail, tt.detail) || (r.Status == Warn) == (r.Fix == "") {
				t.Errorf("checkCgroup = %+v, want status %s and detail with %q", r, tt.want, tt.detail)
			}
		})
	}
}

func TestCheckTun(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		deny  bool
		want  Status
		fix   string
	}{
		{"usable", map[string]string{"dev/net/tun": ""}, false, OK, ""},
		{"missing", nil, false, Warn, "modprobe tun"},
		{"denied", map[string]string{"dev/net/tun": ""}, true, Warn, "run as root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, tt.files)
			if tt.deny {
				h.openFile = denied
			}
			r := h.checkTun()
			if r.Status != tt.want || !strings.Contains(r.Fix, tt.fix) || (r.Status == OK) != (r.Fix == "") {
				t.Errorf("checkTun = %+v, want status %s and fix with %q", r, tt.want, tt.fix)
			}
		})
	}
}

func TestCheckStateRoot(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		root   string
		want   Status
		detail string
	}{
		{"writable", dir, OK, "state root " + dir + " is writable"},
		{"not yet made", filepath.Join(dir, "a", "b"), OK, "state root " + dir + "/a/b does not exist yet; kindling can create it in " + dir},
		{"a file", file, Fail, "state root " + file + ": " + file + " is not a directory"},
		{"under a file", filepath.Join(file, "x"), Fail, "state root " + file + "/x: not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := (&Host{StateRoot: tt.root}).checkStateRoot()
			if r.Status != tt.want || r.Detail != tt.detail {
				t.Errorf("checkStateRoot = %+v\nwant status %s, detail %q", r, tt.want, tt.detail)
			}
			if tt.want == Fail && r.Fix != "give a writable --root DIR or set KINDLING_ROOT" {
				t.Errorf("fix %q", r.Fix)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the checks left files behind: %v", ents)
	}
}

func TestCheckTmpfs(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Status
	}{
		{"present", map[string]string{"proc/filesystems": "nodev\tsysfs\nnodev\ttmpfs\n\text4\n"}, OK},
		{"absent", map[string]string{"proc/filesystems": "nodev\tsysfs\n\text4\n"}, Warn},
		{"unreadable", nil, Warn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := fakeHost(t, tt.files).checkTmpfs(); r.Status != tt.want || (r.Status == OK) != (r.Fix == "") {
				t.Errorf("checkTmpfs = %+v, want %s", r, tt.want)
			}
		})
	}
}

func TestCheckUserNamespaces(t *testing.T) {
	const max = "proc/sys/user/max_user_namespaces"
	tests := []struct {
		name   string
		files  map[string]string
		euid   int
		want   Status
		detail string
	}{
		{"available", map[string]string{max: "63000\n"}, 1000, OK, "available (up to 63000)"},
		{"no kernel support", nil, 1000, Warn, "no user namespaces"},
		{"disabled", map[string]string{max: "0\n"}, 0, Warn, "user.max_user_namespaces = 0"},
		{"unprivileged off", map[string]string{max: "100\n", "proc/sys/kernel/unprivileged_userns_clone": "0\n"}, 1000, Warn, "unprivileged_userns_clone = 0"},
		{"unprivileged off, root", map[string]string{max: "100\n", "proc/sys/kernel/unprivileged_userns_clone": "0\n"}, 0, OK, "available"},
		{"apparmor", map[string]string{max: "100\n", "proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1\n"}, 1000, Warn, "AppArmor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, tt.files)
			h.euid = func() int { return tt.euid }
			r := h.checkUserNamespaces()
			if r.Status != tt.want || !strings.Contains(r.Detail, tt.detail) || (r.Status == OK) != (r.Fix == "") {
				t.Errorf("checkUserNamespaces = %+v, want status %s and detail with %q", r, tt.want, tt.detail)
			}
		})
	}
}

// TestCheck runs every check on a host with nothing: the results come in
// their order, the missing KVM fails and the rest warn.
func TestCheck(t *testing.T) {
	testutil.CheckLeaks(t)
	h := fakeHost(t, nil)
	h.Firecracker = script(t, "firecracker", realFC)
	h.FindJailer = func(string) (string, error) { return "", &notFoundError{name: "jailer"} }
	h.StateRoot = t.TempDir()
	rs := h.Check(context.Background())
	var names []string
	for _, r := range rs {
		names = append(names, r.Check+"="+string(r.Status))
	}
	want := "kvm=fail firecracker=ok jailer=warn cgroup=warn tun=warn state-root=ok tmpfs=warn user-namespaces=warn"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("Check = %s\nwant    %s", got, want)
	}
	if !Failed(rs) {
		t.Error("Failed = false with a failed check")
	}
	if Failed(rs[1:]) {
		t.Error("Failed = true without a failed check")
	}
}

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	onPath := filepath.Join(dir, "firecracker")
	if err := os.WriteFile(onPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, given, env, path string
		want                   string
	}{
		{"given first", "/x/fc", "/y/fc", dir, "/x/fc"},
		{"then the variable", "", "/y/fc", dir, "/y/fc"},
		{"then PATH", "", "", dir, onPath},
		{"none", "", "", t.TempDir(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvFirecracker, tt.env)
			t.Setenv("PATH", tt.path)
			got, err := LookupFirecracker(tt.given)
			if tt.want == "" {
				if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != "no firecracker executable found" {
					t.Fatalf("LookupFirecracker = %q, %v; want ErrNotFound", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("LookupFirecracker = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseRelease(t *testing.T) {
	tests := []struct {
		out     string
		name    string
		version string
		ok      bool
	}{
		{"Firecracker v1.14.2\n\n", "Firecracker", "v1.14.2", true},
		{"Jailer v1.7.0\n", "Jailer", "v1.7.0", true},
		{"Firecracker v0.25.2", "Firecracker", "v0.25.2", true},
		{"Firecracker 1.14.2", "", "", false},
		{"Firecracker v1.14", "", "", false},
		{"Firecracker v1.x.2", "", "", false},
		{"hello", "", "", false},
		{"", "", "", false},
		{"\nFirecracker v1.14.2", "", "", false},
	}
	for _, tt := range tests {
		r, ok := parseRelease(tt.out)
		if ok != tt.ok || r.name != tt.name || r.version != tt.version {
			t.Errorf("parseRelease(%q) = %+v, %v; want %s %s, %v", tt.out, r, ok, tt.name, tt.version, tt.ok)
		}
	}
}

func FuzzParseRelease(f *testing.F) {
	f.Add("Firecracker v1.14.2\n\n")
	f.Add("Jailer v1.7.0")
	f.Add("x v-1.0.0")
	f.Fuzz(func(t *testing.T, out string) {
		r, ok := parseRelease(out)
		if ok && (r.major < 0 || !strings.HasPrefix(r.version, "v") || !strings.Contains(out, r.version)) {
			t.Errorf("parseRelease(%q) = %+v", out, r)
		}
	})
}

// As root, sandboxes run under the jailer by default: a missing jailer
// fails the check unless $KINDLING_NO_JAILER opts out.
func TestCheckJailerNeededAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the jailer is the default only as root")
	}
	for _, tt := range []struct {
		env  string
		want Status
	}{{"0", Fail}, {"1", Warn}} {
		t.Run("KINDLING_NO_JAILER="+tt.env, func(t *testing.T) {
			t.Setenv("KINDLING_NO_JAILER", tt.env)
			h := fakeHost(t, nil)
			h.FindJailer = func(string) (string, error) { return "", &notFoundError{name: "jailer"} }
			r := h.checkJailer(context.Background(), nil)
			if r.Status != tt.want {
				t.Errorf("checkJailer = %+v, want status %s", r, tt.want)
			}
			if tt.want == Fail && (!strings.Contains(r.Detail, "every sandbox runs under the jailer") || !strings.Contains(r.Fix, "--no-jailer")) {
				t.Errorf("checkJailer = %+v: want the reason and --no-jailer in the fix", r)
			}
		})
	}
}
