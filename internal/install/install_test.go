package install

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
	"github.com/kindling-vm/kindling/internal/install/installtest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// isolate points every lookup of the test at nothing on the host: an empty
// PATH, no KINDLING_* variables, and dir as the install directory.
func isolate(t *testing.T, dir string) {
	t.Helper()
	t.Setenv("PATH", t.TempDir())
	t.Setenv(EnvFirecracker, "")
	t.Setenv(EnvJailer, "")
	t.Setenv(EnvBaseURL, "")
	t.Setenv(EnvDir, dir)
}

// entries lists what dir holds ("" entries when it does not exist).
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestInstall(t *testing.T) {
	testutil.CheckLeaks(t)
	fcPath := testutil.FakeFirecracker(t)
	fc, err := os.ReadFile(fcPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := installtest.NewServer(t)
	rel := installtest.NewRelease(DefaultVersion, fc)
	archive := srv.Publish(t, rel)
	dir := filepath.Join(t.TempDir(), "bin")
	isolate(t, dir)

	var last Progress
	calls := 0
	r, err := Install(context.Background(), Options{
		BaseURL:  srv.URL,
		Arch:     "x86_64",
		Progress: func(p Progress) { last = p; calls++ },
	})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	vdir := filepath.Join(dir, DefaultVersion)
	want := Release{
		Version:           DefaultVersion,
		Arch:              "x86_64",
		Dir:               vdir,
		Firecracker:       filepath.Join(vdir, "firecracker"),
		Jailer:            filepath.Join(vdir, "jailer"),
		FirecrackerSHA256: installtest.SHA256(fc),
		JailerSHA256:      installtest.SHA256(rel.Jailer),
		Source:            srv.URL + "/" + DefaultVersion + "/" + rel.ArchiveName(),
		ArchiveSHA256:     installtest.SHA256(archive),
		InstalledAt:       r.InstalledAt,
		Current:           true,
	}
	if r != want {
		t.Errorf("Install returned\n%+v\nwant\n%+v", r, want)
	}
	if time.Since(r.InstalledAt) > time.Minute {
		t.Errorf("InstalledAt %v is not now", r.InstalledAt)
	}
	if calls == 0 || last.Done != int64(len(archive)) || last.Total != int64(len(archive)) || last.File != rel.ArchiveName() {
		t.Errorf("last progress %+v after %d calls, want %d of %d bytes of %s", last, calls, len(archive), len(archive), rel.ArchiveName())
	}
	// Only the two executables and the manifest, with their modes.
	if got := entries(t, dir); !slices.Equal(got, []string{"current", DefaultVersion}) {
		t.Errorf("install dir holds %q, want current and %s", got, DefaultVersion)
	}
	if got := entries(t, vdir); !slices.Equal(got, []string{"firecracker", "jailer", "release.json"}) {
		t.Errorf("release dir holds %q", got)
	}
	for name, mode := range map[string]os.FileMode{"firecracker": 0o755, "jailer": 0o755, "release.json": 0o644, "": 0o755 | os.ModeDir} {
		fi, err := os.Stat(filepath.Join(vdir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	for p, body := range map[string][]byte{want.Firecracker: fc, want.Jailer: rel.Jailer} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, body) {
			t.Errorf("%s differs from the release's", p)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "current")); err != nil || l != DefaultVersion {
		t.Errorf("current links to %q (%v), want %s", l, err, DefaultVersion)
	}
	// The lookup finds it, and it runs.
	got, err := Find(Firecracker, "")
	if err != nil || got != want.Firecracker {
		t.Fatalf("Find(firecracker) = %q, %v; want %q", got, err, want.Firecracker)
	}
	if got, err := Find(Jailer, ""); err != nil || got != want.Jailer {
		t.Errorf("Find(jailer) = %q, %v; want %q", got, err, want.Jailer)
	}
	out, err := exec.Command(got, "--version").Output()
	if err != nil || !strings.Contains(string(out), "v") {
		t.Errorf("installed firecracker --version: %q, %v", out, err)
	}
	// List shows it; a second install downloads nothing.
	ls, err := List("")
	if err != nil || len(ls) != 1 || ls[0] != want {
		t.Errorf("List = %+v, %v; want [%+v]", ls, err, want)
	}
	n := len(srv.Requests())
	again, err := Install(context.Background(), Options{BaseURL: srv.URL, Arch: "x86_64"})
	if err != nil || !again.AlreadyInstalled || again.Firecracker != want.Firecracker {
		t.Errorf("second Install = %+v, %v; want it already installed", again, err)
	}
	if m := len(srv.Requests()); m != n {
		t.Errorf("second Install made %d requests, want none", m-n)
	}
}

// TestInstallVersions installs two releases, lists them and uninstalls
// them, following "current" throughout.
func TestInstallVersions(t *testing.T) {
	testutil.CheckLeaks(t)
	srv := installtest.NewServer(t)
	for _, v := range []string{"v1.7.0", "v1.14.2"} {
		srv.Publish(t, installtest.NewRelease(v, []byte("#!/bin/sh\necho Firecracker "+v+"\n")))
	}
	dir := t.TempDir()
	isolate(t, dir)
	ctx := context.Background()
	for _, v := range []string{"1.7.0", "v1.14.2"} { // with and without the v
		if _, err := Install(ctx, Options{Version: v, BaseURL: srv.URL, Arch: "x86_64"}); err != nil {
			t.Fatalf("install %s: %v", v, err)
		}
	}
	current := func() string {
		l, _ := os.Readlink(filepath.Join(dir, "current"))
		return l
	}
	versions := func() []string {
		ls, err := List(dir)
		if err != nil {
			t.Fatal(err)
		}
		var vs []string
		for _, r := range ls {
			v := r.Version
			if r.Current {
				v += "*"
			}
			vs = append(vs, v)
		}
		return vs
	}
	if got := versions(); !slices.Equal(got, []string{"v1.14.2*", "v1.7.0"}) {
		t.Errorf("List = %q, want v1.14.2 (current) then v1.7.0", got)
	}
	// Installing an installed release makes it current.
	if _, err := Install(ctx, Options{Version: "v1.7.0", BaseURL: srv.URL, Arch: "x86_64"}); err != nil {
		t.Fatal(err)
	}
	if c := current(); c != "v1.7.0" {
		t.Errorf("current = %q after reinstalling v1.7.0", c)
	}
	// Uninstalling the current release moves current to the newest left.
	cur, err := Uninstall(dir, "1.7.0")
	if err != nil || cur != "v1.14.2" || current() != "v1.14.2" {
		t.Errorf("Uninstall(v1.7.0) = %q, %v; link %q; want v1.14.2", cur, err, current())
	}
	if got := versions(); !slices.Equal(got, []string{"v1.14.2*"}) {
		t.Errorf("List = %q after uninstall", got)
	}
	if _, err := Uninstall(dir, "v1.7.0"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Uninstall of an uninstalled release: %v, want ErrNotFound", err)
	}
	if _, err := Uninstall(dir, "latest"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Uninstall(latest): %v, want ErrInvalid", err)
	}
	cur, err = Uninstall(dir, "v1.14.2")
	if err != nil || cur != "" {
		t.Errorf("Uninstall(v1.14.2) = %q, %v; want no current", cur, err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("install dir holds %q after uninstalling everything", got)
	}
	if _, err := Find(Firecracker, ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Find after uninstalling: %v, want ErrNotFound", err)
	}
}

// TestInstallFailures checks that each failure is reported as such and
// leaves nothing behind: not in the install directory, not in the release
// already installed there.
func TestInstallFailures(t *testing.T) {
	const v = "v1.14.2"
	rel := installtest.NewRelease(v, []byte("#!/bin/sh\necho Firecracker v1.14.2\n"))
	good := func(t *testing.T) []byte { return installtest.TGZ(t, rel.Members()) }
	closedPort := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}
	// withSums is the release with SHA256SUMS replaced by sums.
	withSums := func(t *testing.T, sums []byte) []byte {
		return installtest.TGZ(t, append(rel.Files(), installtest.Member{Name: rel.Top() + "SHA256SUMS", Body: sums}))
	}
	for _, tc := range []struct {
		name    string
		version string
		serve   func(t *testing.T, s *installtest.Server) // publishes what the case needs
		baseURL func(t *testing.T, s *installtest.Server) string
		is      error  // the error matches it
		msg     string // and says this
		noReq   bool   // refused before any request
	}{{
		name:    "connection refused",
		baseURL: func(t *testing.T, _ *installtest.Server) string { return closedPort(t) },
		is:      errdefs.ErrUnavailable, msg: "connection refused",
	}, {
		name:  "404",
		serve: func(t *testing.T, s *installtest.Server) {},
		is:    errdefs.ErrNotFound, msg: "/v1.14.2/firecracker-v1.14.2-x86_64.tgz.sha256.txt: 404 Not Found",
	}, {
		name: "500",
		serve: func(t *testing.T, s *installtest.Server) {
			s.PublishArchive(rel, good(t))
			s.Handle(v, rel.ArchiveName(), func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) })
		},
		is: errdefs.ErrUnavailable, msg: "500 Internal Server Error",
	}, {
		name: "archive checksum mismatch",
		serve: func(t *testing.T, s *installtest.Server) {
			s.PublishArchive(rel, good(t))
			s.Put(v, rel.ArchiveName()+".sha256.txt", installtest.ChecksumFile(rel.ArchiveName(), []byte("another archive")))
		},
		is: errdefs.ErrCorrupt, msg: "firecracker-v1.14.2-x86_64.tgz: SHA-256 ",
	}, {
		name: "checksum file for another archive",
		serve: func(t *testing.T, s *installtest.Server) {
			a := good(t)
			s.PublishArchive(rel, a)
			s.Put(v, rel.ArchiveName()+".sha256.txt", installtest.ChecksumFile("firecracker-v1.14.2-aarch64.tgz", a))
		},
		is: errdefs.ErrCorrupt, msg: "checksum of another file",
	}, {
		name: "checksum file is not one",
		serve: func(t *testing.T, s *installtest.Server) {
			s.PublishArchive(rel, good(t))
			s.Put(v, rel.ArchiveName()+".sha256.txt", []byte("<html>sign in</html>\n"))
		},
		is: errdefs.ErrCorrupt, msg: "not a checksum file",
	}, {
		name: "executable checksum mismatch",
		serve: func(t *testing.T, s *installtest.Server) {
			files := rel.Files()
			sums := installtest.SHA256Sums(files)
			sums = bytes.Replace(sums, []byte(installtest.SHA256(rel.Jailer)), []byte(installtest.SHA256([]byte("other jailer"))), 1)
			s.PublishArchive(rel, withSums(t, sums))
		},
		is: errdefs.ErrCorrupt, msg: "release-v1.14.2-x86_64/jailer-v1.14.2-x86_64: SHA-256 ",
	}, {
		name: "SHA256SUMS without the executable",
		serve: func(t *testing.T, s *installtest.Server) {
			s.PublishArchive(rel, withSums(t, installtest.SHA256Sums(rel.Files()[:1])))
		},
		is: errdefs.ErrCorrupt, msg: "SHA256SUMS has no line for jailer-v1.14.2-x86_64",
	}, {
		name: "no SHA256SUMS",
		serve: func(t *testing.T, s *installtest.Server) {
			s.PublishArchive(rel, installtest.TGZ(t, rel.Files()))
		},
		is: errdefs.ErrCorrupt, msg: "no SHA256SUMS in the archive",
	}, {
		name: "no jailer",
		serve: func(t *testing.T, s *installtest.Server) {
			files := slices.DeleteFunc(rel.Files(), func(m installtest.Member) bool { return strings.Contains(m.Name, "/jailer-") })
			files = append(files, installtest.Member{Name: rel.Top() + "SHA256SUMS", Body: installtest.SHA256Sums(rel.Files())})
			s.PublishArchive(rel, installtest.TGZ(t, files))
		},
		is: errdefs.ErrCorrupt, msg: "no release-v1.14.2-x86_64/jailer-v1.14.2-x86_64 in the archive",
	}, {
		name: "truncated archive",
		serve: func(t *testing.T, s *installtest.Server) {
			// A mirror holding a cut copy, with the cut copy's checksum.
			a := good(t)
			s.PublishArchive(rel, a[:len(a)*2/3])
		},
		is: errdefs.ErrCorrupt, msg: "firecracker-v1.14.2-x86_64.tgz is truncated",
	}, {
		name: "truncated download",
		serve: func(t *testing.T, s *installtest.Server) {
			a := good(t)
			s.PublishArchive(rel, a)
			s.Handle(v, rel.ArchiveName(), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(len(a)))
				w.Write(a[:len(a)/2])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // close the connection
			})
		},
		is: errdefs.ErrUnavailable, msg: "connection closed after ",
	}, {
		name: "not gzip",
		serve: func(t *testing.T, s *installtest.Server) {
			s.PublishArchive(rel, []byte("<html>not found</html>"))
		},
		is: errdefs.ErrCorrupt, msg: "gzip: invalid header",
	}, {
		name: "member escaping the archive",
		serve: func(t *testing.T, s *installtest.Server) {
			ms := append(rel.Members(), installtest.Member{Name: "../../evil", Body: []byte("x")})
			s.PublishArchive(rel, installtest.TGZ(t, ms))
		},
		is: errdefs.ErrCorrupt, msg: `member "../../evil" points outside the archive`,
	}, {
		name: "executable is a symlink",
		serve: func(t *testing.T, s *installtest.Server) {
			ms := slices.DeleteFunc(rel.Members(), func(m installtest.Member) bool { return strings.Contains(m.Name, "/jailer-") })
			ms = append(ms, installtest.Member{Name: rel.MemberName("jailer"), Typeflag: tar.TypeSymlink, Link: "/bin/sh"})
			s.PublishArchive(rel, installtest.TGZ(t, ms))
		},
		is: errdefs.ErrCorrupt, msg: "is not a regular file",
	}, {
		name:    "below v1.0",
		version: "v0.25.2",
		is:      errdefs.ErrNotSupported, msg: "Firecracker v0.25.2 is not supported: kindling drives v1.0 and newer",
		noReq: true,
	}, {
		name:    "malformed version",
		version: "latest",
		is:      errdefs.ErrInvalid, msg: `release "latest": invalid argument: want vX.Y.Z`,
		noReq: true,
	}, {
		name:    "bad base URL",
		baseURL: func(t *testing.T, _ *installtest.Server) string { return "ftp://mirror/fc" },
		is:      errdefs.ErrInvalid, msg: `scheme "ftp"`,
		noReq: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			s := installtest.NewServer(t)
			if tc.serve != nil {
				tc.serve(t, s)
			}
			base := s.URL
			if tc.baseURL != nil {
				base = tc.baseURL(t, s)
			}
			dir := t.TempDir()
			isolate(t, dir)
			// An earlier release is installed and current: a failure must
			// not touch it.
			old := installtest.NewRelease("v1.7.0", []byte("old"))
			s.Publish(t, old)
			if _, err := Install(context.Background(), Options{Version: old.Version, BaseURL: s.URL, Arch: "x86_64"}); err != nil {
				t.Fatal(err)
			}
			before := len(s.Requests())
			r, err := Install(context.Background(), Options{Version: tc.version, BaseURL: base, Arch: "x86_64"})
			if err == nil {
				t.Fatalf("Install succeeded: %+v", r)
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Install error: %v\nwant one matching %v and saying %q", err, tc.is, tc.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error has more than one line: %q", err)
			}
			if tc.noReq && len(s.Requests()) != before {
				t.Errorf("requests made: %q", s.Requests()[before:])
			}
			checkOnly(t, dir, old.Version)
		})
	}
}

// checkOnly checks that dir holds release version alone, current, and no
// temporary files.
func checkOnly(t *testing.T, dir, version string) {
	t.Helper()
	if got := entries(t, dir); !slices.Equal(got, []string{"current", version}) {
		t.Errorf("install dir holds %q, want only current and %s", got, version)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "current")); l != version {
		t.Errorf("current links to %q, want %s", l, version)
	}
	if got := entries(t, filepath.Join(dir, version)); !slices.Equal(got, []string{"firecracker", "jailer", "release.json"}) {
		t.Errorf("%s holds %q", version, got)
	}
}

// TestInstallCancel cancels an install while the archive downloads from a
// server that stalls half-way.
func TestInstallCancel(t *testing.T) {
	testutil.CheckLeaks(t)
	rel := installtest.NewRelease("v1.14.2", bytes.Repeat([]byte("firecracker"), 100000))
	s := installtest.NewServer(t)
	a := installtest.TGZ(t, rel.Members())
	s.PublishArchive(rel, a)
	stalled := make(chan struct{})
	s.Handle(rel.Version, rel.ArchiveName(), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(a)))
		w.Write(a[:len(a)/2])
		w.(http.Flusher).Flush()
		close(stalled)
		<-r.Context().Done() // until the client goes away
	})
	dir := t.TempDir()
	isolate(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stalled
		cancel()
	}()
	_, err := Install(ctx, Options{BaseURL: s.URL, Arch: "x86_64"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Install: %v, want context.Canceled", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("install dir holds %q after a cancel", got)
	}
}

// TestInstallBusy: a second install into the same directory while one
// runs is refused.
func TestInstallBusy(t *testing.T) {
	dir := t.TempDir()
	isolate(t, dir)
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, err = Install(context.Background(), Options{BaseURL: "http://127.0.0.1:1", Arch: "x86_64"})
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Install while locked: %v, want ErrConflict", err)
	}
	if _, err := Uninstall(dir, DefaultVersion); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Uninstall of nothing: %v, want ErrNotFound", err)
	}
}

// TestInstallFullDisk installs into a small tmpfs: the download or the
// extraction runs out of space, and nothing is left.
func TestInstallFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	// Random executables do not compress: the archive is as big as they.
	fc := make([]byte, 600<<10)
	rand.Read(fc)
	rel := installtest.NewRelease("v1.14.2", fc)
	rel.Jailer = make([]byte, 600<<10)
	rand.Read(rel.Jailer)
	s := installtest.NewServer(t)
	s.Publish(t, rel)
	for _, tc := range []struct {
		name, size string
		file       string // the file that did not fit
	}{
		{"during download", "256k", "/firecracker-v1.14.2-x86_64.tgz"}, // the archive does not fit
		{"during extraction", "1600k", "/v1.14.2/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+tc.size); err != nil {
				t.Skipf("mount tmpfs: %v", err)
			}
			t.Cleanup(func() {
				if err := syscall.Unmount(dir, 0); err != nil {
					t.Errorf("unmount %s: %v", dir, err)
				}
			})
			isolate(t, dir)
			_, err := Install(context.Background(), Options{BaseURL: s.URL, Arch: "x86_64"})
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("Install: %v, want ENOSPC writing %s", err, tc.file)
			}
			if got := entries(t, dir); len(got) != 0 {
				t.Errorf("install dir holds %q after running out of space", got)
			}
		})
	}
}

// TestInstallFileURL installs from a directory (a mirror copied onto an
// air-gapped host), given as a file:// URL.
func TestInstallFileURL(t *testing.T) {
	rel := installtest.NewRelease("v1.7.0", []byte("fc"))
	mirror := t.TempDir()
	a := installtest.TGZ(t, rel.Members())
	os.Mkdir(filepath.Join(mirror, rel.Version), 0o755)
	for name, b := range map[string][]byte{rel.ArchiveName(): a, rel.ArchiveName() + ".sha256.txt": installtest.ChecksumFile(rel.ArchiveName(), a)} {
		if err := os.WriteFile(filepath.Join(mirror, rel.Version, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	isolate(t, dir)
	t.Setenv(EnvBaseURL, "file://"+mirror)
	r, err := Install(context.Background(), Options{Version: "v1.7.0", Arch: "x86_64"})
	if err != nil {
		t.Fatalf("Install from file://: %v", err)
	}
	if r.Source != "file://"+mirror+"/v1.7.0/"+rel.ArchiveName() {
		t.Errorf("Source = %q", r.Source)
	}
	_, err = Install(context.Background(), Options{Version: "v1.8.0", Arch: "x86_64"})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a release missing from the mirror: %v, want ErrNotFound", err)
	}
}

var _ io.Writer = (*progressWriter)(nil)

// TestInstallReal installs a release built around the real Firecracker in
// $KINDLING_FIRECRACKER (skipped without it) and runs the installed copy.
func TestInstallReal(t *testing.T) {
	real := testutil.Firecracker(t)
	out, err := exec.Command(real, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", real, err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 2 {
		t.Fatalf("%s --version printed %q", real, out)
	}
	v, err := ParseVersion(fields[1])
	if err != nil {
		t.Fatalf("%s --version printed %q: %v", real, out, err)
	}
	fc, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	s := installtest.NewServer(t)
	s.Publish(t, installtest.NewRelease(v.String(), fc))
	dir := t.TempDir()
	isolate(t, dir)
	r, err := Install(context.Background(), Options{Version: v.String(), BaseURL: s.URL, Arch: "x86_64"})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	p, err := Find(Firecracker, "")
	if err != nil || p != r.Firecracker {
		t.Fatalf("Find = %q, %v; want %q", p, err, r.Firecracker)
	}
	// The first line is the version; a log line with the time follows.
	got, err := exec.Command(p, "--version").Output()
	first := func(b []byte) string { l, _, _ := strings.Cut(string(b), "\n"); return l }
	if err != nil || first(got) != first(out) {
		t.Errorf("installed --version: %q, %v; want %q first", got, err, first(out))
	}
}

func TestExtractCancelled(t *testing.T) {
	rel := installtest.NewRelease("v1.14.2", bytes.Repeat([]byte("fc"), 1<<20))
	dir := t.TempDir()
	ar := filepath.Join(dir, rel.ArchiveName())
	if err := os.WriteFile(ar, installtest.TGZ(t, rel.Members()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, _ := ParseVersion(rel.Version)
	_, err := extract(ctx, ar, release{version: v, arch: "x86_64"}, dir)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("extract with a cancelled context: %v, want context.Canceled", err)
	}
}

// TestInstallRemovesStale: what an install killed outright left (its
// staging directory) is removed by the next one.
func TestInstallRemovesStale(t *testing.T) {
	s := installtest.NewServer(t)
	s.Publish(t, installtest.NewRelease("v1.7.0", []byte("fc")))
	dir := t.TempDir()
	isolate(t, dir)
	stale := filepath.Join(dir, ".tmp-v1.14.2-12345", "v1.14.2")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "firecracker"), []byte("half"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(context.Background(), Options{Version: "v1.7.0", BaseURL: s.URL, Arch: "x86_64"}); err != nil {
		t.Fatal(err)
	}
	checkOnly(t, dir, "v1.7.0")
}
