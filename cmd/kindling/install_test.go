package main

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/internal/install/installtest"
)

// Releases the install scripts' server publishes, each good or broken in
// its own way.
const (
	relBadArchiveSum = "v1.9.0" // the .sha256.txt does not match the archive
	relBadExeSum     = "v1.9.1" // SHA256SUMS does not match the jailer
	relTruncated     = "v1.9.2" // a cut archive, with the cut archive's checksum
	relStall         = "v1.9.3" // the download stalls half-way (for Ctrl-C)
	relBig           = "v1.9.4" // 2 MiB of incompressible executables (for a full disk)
)

// TestScriptsInstall runs the scripts in testdata/install: kindling
// install, --list, uninstall, run --install and each way an install
// fails, against release servers on loopback (never the internet).
func TestScriptsInstall(t *testing.T) {
	fcPath := fakeFirecracker(t)
	fc, err := os.ReadFile(fcPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := installtest.NewServer(t)
	for _, v := range install.TestedVersions {
		srv.Publish(t, installtest.NewRelease(v, fc))
	}
	publishBroken(t, srv, fc)
	stalled := make(chan struct{}, 16)
	stall := installtest.NewRelease(relStall, fc)
	a := installtest.TGZ(t, stall.Members())
	srv.PublishArchive(stall, a)
	srv.Handle(relStall, stall.ArchiveName(), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(a)))
		w.Write(a[:len(a)/2])
		w.(http.Flusher).Flush()
		stalled <- struct{}{}
		<-r.Context().Done()
	})

	// An HTTPS release server reached through a proxy (which connects to
	// it alone, whatever it is asked for) as https://0.0.0.0: Go's proxy
	// rules exempt loopback addresses but not 0.0.0.0, and were the proxy
	// ignored, a connection to 0.0.0.0 would stay on this host (and fail,
	// as nothing serves HTTPS on its port 443 for this certificate).
	tlsSrv := installtest.NewTLSServer(t, "0.0.0.0")
	tlsSrv.Publish(t, installtest.NewRelease("v1.7.0", fc))
	proxy := newConnectProxy(t, tlsSrv.Listener.Addr().String())
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(certFile, tlsSrv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + l.Addr().String()
	l.Close()

	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "install"),
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			root, err := os.MkdirTemp("", "kd")
			if err != nil {
				return err
			}
			env.Defer(func() {
				left := leftovers(root) // the sandboxes of 'run --install'
				if err := os.RemoveAll(root); err != nil {
					left = append(left, fmt.Sprintf("remove root: %v", err))
				}
				if len(left) > 0 {
					env.T().Fatal("the script left behind: " + strings.Join(left, "; "))
				}
			})
			env.Setenv("KINDLING_ROOT", root)
			env.Setenv("KINDLING_FIRECRACKER", "")
			// The release's jailer is the fake Firecracker under another
			// name: run without it (the jailer scripts test the policy).
			env.Setenv("KINDLING_NO_JAILER", "1")
			env.Setenv(install.EnvDir, filepath.Join(env.WorkDir, "fcbin"))
			env.Setenv(install.EnvBaseURL, srv.URL)
			env.Setenv("CLOSED_URL", closedURL)
			env.Setenv("PROXY_URL", proxy.URL)
			env.Setenv("PROXY_CERT", certFile)
			env.Setenv("DEFAULT_VERSION", install.DefaultVersion)
			env.Setenv("FC_SHA256", installtest.SHA256(fc))
			// Only kindling on PATH: no firecracker there.
			kd, err := exec.LookPath("kindling")
			if err != nil {
				return err
			}
			env.Setenv("PATH", filepath.Dir(kd))
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": cmdExitCode,
			"jsonget":  cmdJSONGet,
			// waitstall waits until a download of relStall has stalled.
			"waitstall": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 0 {
					ts.Fatalf("usage: waitstall")
				}
				select {
				case <-stalled:
				case <-time.After(30 * time.Second):
					ts.Fatalf("no download of %s began", relStall)
				}
			},
			// proxied checks that the proxy was asked for HOST:PORT.
			"proxied": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: proxied HOST:PORT")
				}
				if got := slices.Contains(proxy.targets(), args[0]); got == neg {
					ts.Fatalf("proxy asked for %q; want %s: %v", proxy.targets(), args[0], !neg)
				}
			},
			// tmpfs mounts a tmpfs of a size on a new directory, unmounted
			// when the script ends: tmpfs DIR SIZE.
			"tmpfs": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: tmpfs DIR SIZE")
				}
				dir := ts.MkAbs(args[0])
				ts.Check(os.MkdirAll(dir, 0o755))
				ts.Check(syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+args[1]))
				ts.Defer(func() {
					if err := syscall.Unmount(dir, 0); err != nil {
						ts.Logf("unmount %s: %v", dir, err)
					}
				})
			},
			// isempty checks that a directory holds nothing (or is absent).
			"isempty": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: isempty DIR")
				}
				ents, err := os.ReadDir(ts.MkAbs(args[0]))
				if err != nil && !os.IsNotExist(err) {
					ts.Fatalf("%v", err)
				}
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				if (len(names) == 0) == neg {
					ts.Fatalf("%s holds %q", args[0], names)
				}
			},
		},
	})
}

// publishBroken serves the broken releases.
func publishBroken(t *testing.T, srv *installtest.Server, fc []byte) {
	r := installtest.NewRelease(relBadArchiveSum, fc)
	srv.PublishArchive(r, installtest.TGZ(t, r.Members()))
	srv.Put(r.Version, r.ArchiveName()+".sha256.txt", installtest.ChecksumFile(r.ArchiveName(), []byte("something else")))

	r = installtest.NewRelease(relBadExeSum, fc)
	files := r.Files()
	sums := strings.Replace(string(installtest.SHA256Sums(files)), installtest.SHA256(r.Jailer), installtest.SHA256([]byte("another jailer")), 1)
	srv.PublishArchive(r, installtest.TGZ(t, append(files, installtest.Member{Name: r.Top() + "SHA256SUMS", Body: []byte(sums)})))

	r = installtest.NewRelease(relTruncated, fc)
	a := installtest.TGZ(t, r.Members())
	srv.PublishArchive(r, a[:len(a)*2/3])

	// Random executables do not compress: the archive is as big as they.
	r = installtest.NewRelease(relBig, make([]byte, 1<<20))
	r.Jailer = make([]byte, 1<<20)
	rand.Read(r.Firecracker)
	rand.Read(r.Jailer)
	srv.Publish(t, r)
}

// connectProxy is an HTTPS proxy for tests: it answers CONNECT to any
// host by connecting to one address of its own (a test server), and
// records the hosts it was asked for.
type connectProxy struct {
	*httptest.Server
	to string
	mu sync.Mutex // guards asked
	// asked lists the CONNECT targets, in order.
	asked []string
}

func newConnectProxy(t *testing.T, to string) *connectProxy {
	p := &connectProxy{to: to}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	return p
}

func (p *connectProxy) targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}

func (p *connectProxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "this proxy only tunnels", http.StatusMethodNotAllowed)
		return
	}
	p.mu.Lock()
	p.asked = append(p.asked, r.Host)
	p.mu.Unlock()
	up, err := net.Dial("tcp", p.to)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, bufio.NewReader(rw)) // what the client sent after CONNECT
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(conn, up)
	conn.Close()
	<-done
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		p       install.Progress
		elapsed time.Duration
		want    string
	}{
		{install.Progress{File: "fc.tgz", Done: 0, Total: 4 << 20}, 0, "fc.tgz [------------------------] 0 B / 4.0 MiB"},
		{install.Progress{File: "fc.tgz", Done: 1 << 20, Total: 4 << 20}, time.Second, "fc.tgz [######------------------] 1.0 MiB / 4.0 MiB  1.0 MiB/s"},
		{install.Progress{File: "fc.tgz", Done: 4 << 20, Total: 4 << 20}, 2 * time.Second, "fc.tgz [########################] 4.0 MiB / 4.0 MiB  2.0 MiB/s"},
		{install.Progress{File: "fc.tgz", Done: 1536, Total: -1}, time.Second, "fc.tgz 1.5 KiB  1.5 KiB/s"},
	} {
		if got := progressLine(tc.p, tc.elapsed); got != tc.want {
			t.Errorf("progressLine(%+v, %v) = %q, want %q", tc.p, tc.elapsed, got, tc.want)
		}
	}
	if got := byteSize(500); got != "500 B" {
		t.Errorf("byteSize(500) = %q", got)
	}
}

// TestProgressBar: drawn with carriage returns, at most every
// progressInterval (and always at the end), and erased after.
func TestProgressBar(t *testing.T) {
	var out strings.Builder
	b := &progressBar{w: &out, start: time.Now()}
	for i := int64(1); i <= 1000; i++ {
		b.update(install.Progress{File: "f", Done: i, Total: 1000})
	}
	b.clear()
	s := out.String()
	if n := strings.Count(s, "\r"); n < 2 || n > 10 {
		t.Errorf("%d redraws for a quick download, want the first, the last and an erase: %q", n, s)
	}
	if !strings.Contains(s, "1000 B / 1000 B") || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("bar output %q", s)
	}
	// Not a terminal: no bar.
	if isTerminal(&out) || isTerminal(os.NewFile(^uintptr(0), "bad")) {
		t.Error("isTerminal true for a non-terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("isTerminal true for a file")
	}
}
