package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// kindsImage has every kind of file a root filesystem must keep, in two
// layers, the upper one deleting, hiding and replacing files of the lower.
func kindsImage(t testing.TB) v1.Image {
	xattr := file("etc/xattr", "x", 0o644, 0, 0)
	xattr.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.kindling": "yes", "SCHILY.xattr.trusted.kind": "t",
		"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.b": "2", "SCHILY.xattr.user.c": "3", "SCHILY.xattr.user.d": "4"}
	lower := layer(t,
		dir("etc/", 0o755, 0, 0),
		file("etc/passwd", "root:x:0:0:lower\n", 0o644, 0, 0),
		file("etc/gone", "deleted above\n", 0o644, 0, 0),
		xattr,
		dir("opq/", 0o750, 0, 0),
		file("opq/old", "hidden by an opaque dir\n", 0o644, 0, 0),
		dir("bin/", 0o755, 0, 0),
		file("bin/tool", "setuid\n", 0o4755, 0, 0),
		file("bin/gtool", "setgid\n", 0o2711, 0, 42),
		dir("home/", 0o755, 0, 0),
		dir("home/user/", 0o700, 1000, 1000),
		file("home/user/notes", "mine\n", 0o640, 1000, 1000),
		dir("data/", 0o755, 0, 0),
		file("data/a", "linked\n", 0o600, 7, 8),
		hardlink("data/b", "data/a"),
		symlink("rel", "etc/passwd"),
		symlink("abs", "/etc/passwd"),
		dir("dev/", 0o755, 0, 0),
		device("dev/null", tar.TypeChar, 1, 3, 0o666),
		device("dev/loop0", tar.TypeBlock, 7, 0, 0o660),
		device("dev/fifo", tar.TypeFifo, 0, 0, 0o644),
		dir("empty/", 0o711, 0, 0),
		dir("tmp/", 0o1777, 0, 0),
	)
	upper := layer(t,
		dir("etc/", 0o755, 0, 0),
		file("etc/.wh.gone", "", 0o644, 0, 0),
		file("etc/passwd", "root:x:0:0:upper\n", 0o644, 0, 0),
		dir("opq/", 0o750, 0, 0),
		file("opq/.wh..wh..opq", "", 0o644, 0, 0),
		file("opq/new", "new\n", 0o644, 0, 0),
		// A file below a directory this layer does not list, and a hard
		// link to a file of the lower layer.
		file("implied/deep/file", "deep\n", 0o644, 0, 0),
		hardlink("data/c", "data/a"),
	)
	return testImage(t, v1.Config{Cmd: []string{"/bin/tool"}, Env: []string{"PATH=/bin"}, WorkingDir: "/home/user", User: "1000"}, lower, upper)
}

func TestBuildKeepsEveryKindOfFile(t *testing.T) {
	testutil.CheckLeaks(t)
	needBuild(t)
	s := openStore(t)
	agent := fakeAgent(t, "agent-v1")
	im := mustImport(t, s, writeDockerTarball(t, kindsImage(t), "kinds:v1"), ImportOptions{BuildOptions: BuildOptions{Agent: agent}})
	if len(im.RootFS) != 1 || im.RootFS[0].Agent == "" {
		t.Fatalf("RootFS = %+v, want one, with the agent", im.RootFS)
	}
	fs := im.RootFS[0].Path
	fsck(t, fs)

	tests := []struct {
		path string
		want []string // regexps on `debugfs -R 'stat PATH'`
	}{
		{"/etc/passwd", []string{`Type: regular +Mode: +0644`, `User: +0 +Group: +0`}},
		{"/bin/tool", []string{`Mode: +04755`}},
		{"/bin/gtool", []string{`Mode: +02711`, `Group: +42`}},
		{"/home/user", []string{`Type: directory +Mode: +0700`, `User: +1000 +Group: +1000`}},
		{"/home/user/notes", []string{`Mode: +0640`, `User: +1000`}},
		{"/data/a", []string{`Links: 3`, `User: +7 +Group: +8`, `Mode: +0600`}},
		{"/rel", []string{`Type: symlink`, `Fast link dest: "etc/passwd"`}},
		{"/abs", []string{`Type: symlink`, `Fast link dest: "/etc/passwd"`}},
		{"/dev/null", []string{`Type: character special +Mode: +0666`, `Device major/minor number: 01:03`}},
		{"/dev/loop0", []string{`Type: block special +Mode: +0660`, `Device major/minor number: 07:00`}},
		{"/dev/fifo", []string{`Type: FIFO +Mode: +0644`}},
		{"/empty", []string{`Type: directory +Mode: +0711`}},
		{"/tmp", []string{`Type: directory +Mode: +01777`}},
		{"/opq/new", []string{`Type: regular`}},
		{"/implied", []string{`Type: directory +Mode: +0755`, `User: +0`}},
		{"/implied/deep/file", []string{`Type: regular`}},
		{"/etc/xattr", []string{`user.kindling \(3\) = "yes"`, `trusted.kind \(1\) = "t"`}},
		{"/.kindling/kindling-agent", []string{`Type: regular +Mode: +0755`, `User: +0 +Group: +0`}},
		{"/.kindling/image.json", []string{`Type: regular +Mode: +0644`}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			out := debugfs(t, fs, "stat "+tt.path)
			for _, w := range tt.want {
				if !regexp.MustCompile(w).MatchString(out) {
					t.Errorf("stat %s does not match %q:\n%s", tt.path, w, out)
				}
			}
		})
	}
	for _, gone := range []string{"/etc/gone", "/opq/old", "/etc/.wh.gone", "/opq/.wh..wh..opq"} {
		if out := debugfs(t, fs, "stat "+gone); !strings.Contains(out, "File not found") {
			t.Errorf("%s is in the root filesystem:\n%s", gone, out)
		}
	}
	if out := debugfs(t, fs, "cat /etc/passwd"); !strings.Contains(out, "root:x:0:0:upper") {
		t.Errorf("/etc/passwd is not the upper layer's:\n%s", out)
	}
	// The three names of data/a are one inode.
	ino := func(p string) string {
		m := regexp.MustCompile(`Inode: (\d+)`).FindStringSubmatch(debugfs(t, fs, "stat "+p))
		if m == nil {
			t.Fatalf("no inode for %s", p)
		}
		return m[1]
	}
	if a, b, c := ino("/data/a"), ino("/data/b"), ino("/data/c"); a != b || a != c {
		t.Errorf("hard links: inodes %s, %s, %s, want one", a, b, c)
	}
	// Times: the image's mtimes, epoch for the rest.
	if out := debugfs(t, fs, "stat /etc/passwd"); !strings.Contains(out, fmt.Sprintf("mtime: 0x%08x", testTime.Unix())) {
		t.Errorf("/etc/passwd mtime is not the layer's %v:\n%s", testTime, out)
	}
	// The injected configuration.
	var c Config
	if err := json.Unmarshal([]byte(catFile(t, fs, ConfigPath)), &c); err != nil {
		t.Fatalf("%s: %v", ConfigPath, err)
	}
	if c.User != "1000" || c.WorkingDir != "/home/user" || len(c.Cmd) != 1 || c.Env[0] != "PATH=/bin" || c.Entrypoint == nil {
		t.Errorf("%s = %+v", ConfigPath, c)
	}
	agentBytes, _ := os.ReadFile(agent)
	if got := catFile(t, fs, AgentPath); got != string(agentBytes) {
		t.Errorf("%s differs from the agent given (%d bytes, want %d)", AgentPath, len(got), len(agentBytes))
	}
}

// catFile returns a file of an ext4, dumped with debugfs.
func catFile(t testing.TB, fs, p string) string {
	t.Helper()
	out := t.TempDir() + "/out"
	debugfs(t, fs, "dump "+p+" "+out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("dump %s: %v", p, err)
	}
	return string(b)
}

func TestBuildWithoutAgent(t *testing.T) {
	needBuild(t)
	s := openStore(t)
	im := mustImport(t, s, writeDockerTarball(t, simpleImage(t, "noagent"), "plain:1"), ImportOptions{})
	if len(im.RootFS) != 1 || im.RootFS[0].Agent != "" || !strings.HasSuffix(im.RootFS[0].Path, "/rootfs.ext4") {
		t.Fatalf("RootFS = %+v, want one without an agent", im.RootFS)
	}
	fs := im.RootFS[0].Path
	fsck(t, fs)
	if out := debugfs(t, fs, "stat "+AgentPath); !strings.Contains(out, "File not found") {
		t.Errorf("an agent is in a root filesystem built without one:\n%s", out)
	}
	if got := catFile(t, fs, ConfigPath); !strings.Contains(got, `"working_dir": "/srv"`) {
		t.Errorf("%s = %s", ConfigPath, got)
	}
}

// TestBuildReproducible builds one image in two stores, a second apart
// (so that the staging files' change times differ), and compares.
func TestBuildReproducible(t *testing.T) {
	needBuild(t)
	img := kindsImage(t)
	path := writeDockerTarball(t, img, "kinds:v1")
	agent := fakeAgent(t, "agent-v1")
	a := mustImport(t, openStore(t), path, ImportOptions{BuildOptions: BuildOptions{Agent: agent}})
	time.Sleep(1100 * time.Millisecond)
	b := mustImport(t, openStore(t), writeLayout(t, img, ""), ImportOptions{BuildOptions: BuildOptions{Agent: agent}})
	if a.ID != b.ID {
		t.Fatalf("one image, two IDs: %s, %s", a.ID, b.ID)
	}
	ab, err := os.ReadFile(a.RootFS[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b.RootFS[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, bb) {
		i := 0
		for i < len(ab) && i < len(bb) && ab[i] == bb[i] {
			i++
		}
		t.Fatalf("two builds of %s differ (sizes %d, %d; first at byte %d)", a.ID, len(ab), len(bb), i)
	}
	// Another agent gives another file.
	c := mustImport(t, openStore(t), path, ImportOptions{BuildOptions: BuildOptions{Agent: fakeAgent(t, "agent-v2")}})
	cb, err := os.ReadFile(c.RootFS[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ab, cb) {
		t.Error("builds with different agents are identical")
	}
}

func TestImportFormats(t *testing.T) {
	needBuild(t)
	img := simpleImage(t, "formats")
	want, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		refs       []string
		digest     string
	}{
		{"docker save", writeDockerTarball(t, img, "example.com/app:1.0"), []string{"example.com/app:1.0"}, ""},
		{"OCI layout", writeLayout(t, img, "example.com/app:2.0"), []string{"example.com/app:2.0"}, manifest.String()},
		{"OCI archive", tarDir(t, writeLayout(t, img, "")), nil, manifest.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			im := mustImport(t, s, tt.path, ImportOptions{})
			if im.ID != want.String() {
				t.Errorf("ID = %s, want the config digest %s", im.ID, want)
			}
			if strings.Join(im.Refs, ",") != strings.Join(tt.refs, ",") {
				t.Errorf("Refs = %v, want %v", im.Refs, tt.refs)
			}
			if im.Digest != tt.digest {
				t.Errorf("Digest = %q, want %q", im.Digest, tt.digest)
			}
			if im.Platform != Platform || im.Layers != 1 || !im.Created.Equal(testTime) || im.Size == 0 {
				t.Errorf("image = %+v", im)
			}
			if strings.Join(im.Config.Entrypoint, " ") != "/bin/app" || im.Config.User != "1000:1000" {
				t.Errorf("Config = %+v", im.Config)
			}
			fsck(t, im.RootFS[0].Path)
			if got := catFile(t, im.RootFS[0].Path, "/bin/app"); !strings.Contains(got, "formats") {
				t.Errorf("/bin/app = %q", got)
			}
			// Nothing of the import is left but the image.
			for _, l := range storeLeftovers(t, s) {
				if !strings.HasPrefix(l, imagesDir+"/") && !strings.HasPrefix(l, locksDir+"/") {
					t.Errorf("left behind: %s", l)
				}
			}
		})
	}
}

// TestImportConcurrent imports one image from several goroutines at once
// (each with its own flock, as separate processes would): one builds, the
// others find its result.
func TestImportConcurrent(t *testing.T) {
	needBuild(t)
	s := openStore(t)
	path := writeDockerTarball(t, simpleImage(t, "concurrent"), "conc:1")
	const n = 4
	var (
		mu     sync.Mutex
		builds int
		cached int
		ids    = map[string]bool{}
		wg     sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			s2, err := Open(s.Dir()) // another handle, as another process
			if err != nil {
				t.Error(err)
				return
			}
			im, err := s2.Import(context.Background(), path, ImportOptions{Progress: func(e Event) {
				mu.Lock()
				defer mu.Unlock()
				switch e.Kind {
				case EventBuild:
					builds++
				case EventCached:
					cached++
				}
			}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids[im.ID] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if builds != 1 || cached != n-1 || len(ids) != 1 {
		t.Errorf("%d imports: %d builds, %d cached, IDs %v; want 1 build", n, builds, cached, ids)
	}
	list, err := s.List(context.Background())
	if err != nil || len(list) != 1 || len(list[0].RootFS) != 1 {
		t.Errorf("List = %+v, %v; want one image with one root filesystem", list, err)
	}
}
