package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kindling-vm/kindling/internal/store"
)

// The guest side of the agent injection: where the agent and the image's
// process defaults are in every root filesystem built with an agent, and
// the kernel argument that makes the agent the guest's init.
const (
	// AgentPath is the agent binary in the guest (mode 0755, root's).
	AgentPath = "/.kindling/kindling-agent"
	// ConfigPath is the image's Config in the guest, as JSON: env,
	// working_dir, user, entrypoint, cmd. It is written with or without
	// an agent.
	ConfigPath = "/.kindling/image.json"
	// BootArg is the kernel command-line argument that runs the agent as
	// PID 1.
	BootArg = "init=" + AgentPath
	// Platform is the only platform images are accepted for.
	Platform = "linux/amd64"
)

// BuildOptions say what goes into a root filesystem besides the image.
type BuildOptions struct {
	// Agent is the path of the guest agent binary (a static Linux
	// executable) to inject at AgentPath. Empty builds without an agent.
	// Root filesystems are kept per agent: a new agent binary gives a new
	// build, the old one stays until the image is removed.
	Agent string
}

// geteuid is os.Geteuid; tests replace it to play an unprivileged user.
var geteuid = os.Geteuid

// agentFile is an agent binary checked and hashed.
type agentFile struct {
	path string
	sha  string // hex SHA-256
}

// readAgent checks the agent binary at path and hashes it; "" gives nil.
func readAgent(path string) (*agentFile, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, errorf(ErrInvalid, "guest agent %q: %w: build it or give another path", path, errors.Unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	magic := make([]byte, 4)
	if !fi.Mode().IsRegular() || fi.Size() < 64 {
		return nil, errorf(ErrInvalid, "guest agent %q is not an executable file: give the agent binary", path)
	}
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != "\x7fELF" {
		return nil, errorf(ErrInvalid, "guest agent %q is not an ELF executable: give the agent binary built for linux/amd64", path)
	}
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read guest agent %q: %w", path, err)
	}
	return &agentFile{path: path, sha: hex.EncodeToString(h.Sum(nil))}, nil
}

// AgentDigest is the SHA-256 (hex) of the guest agent executable at path:
// the key under which an image keeps the root filesystem built with it
// (RootFS.Agent, Image.RootFSFor). A file that is not an ELF executable is
// refused as ErrInvalid.
func AgentDigest(path string) (string, error) {
	a, err := readAgent(path)
	if err != nil {
		return "", err
	}
	return a.sha, nil
}

// rootfsFile names the root filesystem built with agent sha ("" for none).
func rootfsFile(agentSHA string) string {
	if agentSHA == "" {
		return "rootfs.ext4"
	}
	return "rootfs-agent-" + agentSHA + ".ext4"
}

// epochOf is the time every timestamp the image does not give is set to:
// the image's creation time, or the Unix epoch.
func epochOf(cf *v1.ConfigFile) time.Time {
	t := cf.Created.Time
	if t.IsZero() || t.Unix() < 0 || t.Unix() > 1<<32-1 {
		return time.Unix(0, 0).UTC()
	}
	return time.Unix(t.Unix(), 0).UTC()
}

// configOf takes the process defaults out of an image configuration.
func configOf(cf *v1.ConfigFile) Config {
	c := Config{
		Env:        cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
	}
	// Entries that are not KEY=VALUE mean nothing to a process; the agent
	// refuses them.
	c.Env = slices.DeleteFunc(slices.Clone(c.Env), func(kv string) bool {
		k, _, ok := strings.Cut(kv, "=")
		return !ok || k == ""
	})
	for _, p := range []*[]string{&c.Env, &c.Entrypoint, &c.Cmd} {
		if *p == nil {
			*p = []string{}
		}
	}
	return c
}

// outOfSpace reports whether the file system of dir has too little room
// left for the data of an ext4 with these stats (checked after mke2fs
// failed, its partial output still in place).
func outOfSpace(dir string, st buildStats) bool {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return false
	}
	return int64(fs.Bavail)*fs.Bsize < st.Blocks*4096+16<<20
}

// encodeGuestConfig is the content of ConfigPath in the guest.
func encodeGuestConfig(c Config) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode image configuration: %w", err)
	}
	return append(b, '\n'), nil
}

// readError marks a failure to read the image (as opposed to writing the
// staging tree).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

type markedReader struct{ r io.Reader }

func (m markedReader) Read(b []byte) (int, error) {
	n, err := m.r.Read(b)
	if err != nil && err != io.EOF {
		err = &readError{err: err}
	}
	return n, err
}

// build flattens img into a staging directory, injects the agent and
// writes the ext4 file into the image's directory (created if needed,
// with the raw configuration). Everything it stages is removed whatever
// happens. The caller holds the image's lock.
func (s *Store) build(ctx context.Context, src *source, cf *v1.ConfigFile, h string, ag *agentFile, prog *progress) (_ RootFS, _ buildStats, err error) {
	if geteuid() != 0 {
		return RootFS{}, buildStats{}, errorf(ErrNotSupported, "import %s: building a root filesystem needs root (it keeps the image's owners and device nodes): run kindling as root", src.name)
	}
	for _, t := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := tool(t); err != nil {
			return RootFS{}, buildStats{}, fmt.Errorf("import %s: %w", src.name, err)
		}
	}
	work, err := os.MkdirTemp(filepath.Join(s.dir, tmpDir), h+"-")
	if err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	defer os.RemoveAll(work)
	staging := filepath.Join(work, "root")
	if err := os.Mkdir(staging, 0o755); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	x, err := newExtractor(staging)
	if err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	defer x.close()
	if err := extractImage(ctx, x, prog.image(src.img)); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	if err := x.finishLinks(); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	agentSHA := ""
	if ag != nil {
		agentSHA = ag.sha
	}
	if err := inject(x.root, configOf(cf), ag); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, fmt.Errorf("inject the agent: %w", err))
	}
	epoch := epochOf(cf)
	if err := setTimes(staging, x.times, epoch); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	prog.emit(Event{Kind: EventBuild})
	out := filepath.Join(work, "rootfs.ext4")
	err = mkfs(ctx, mkfsOptions{
		staging: staging, out: out, work: work, epoch: epoch, st: x.st,
		uuid: derivedUUID("uuid", "sha256:"+h, agentSHA),
	})
	if err != nil {
		if outOfSpace(work, x.st) {
			// mke2fs reports a full disk in words only: tell it apart by
			// what is left.
			err = fmt.Errorf("%w (%v)", syscall.ENOSPC, err)
		}
		return RootFS{}, buildStats{}, s.buildErr(src, fmt.Errorf("build ext4: %w", err))
	}
	dir := s.imageDir(h)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	raw, err := src.img.RawConfigFile()
	if err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, &readError{err})
	}
	if err := store.WriteFileAtomic(dir, configFile, raw); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	file := rootfsFile(agentSHA)
	if err := os.Rename(out, filepath.Join(dir, file)); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	if err := store.SyncDir(dir); err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	fi, err := os.Stat(filepath.Join(dir, file))
	if err != nil {
		return RootFS{}, buildStats{}, s.buildErr(src, err)
	}
	return RootFS{Agent: agentSHA, File: file, Path: filepath.Join(dir, file), Size: fi.Size()}, x.st, nil
}

// extractImage writes the flattened layers of img into x.
func extractImage(ctx context.Context, x *extractor, img v1.Image) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	mr := markedReader{rc}
	tr := tar.NewReader(mr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// mutate.Extract ends the tar stream before it reports an
			// error (a bad path, a layer that does not verify): the error
			// comes after the end-of-archive marker.
			_, err := io.Copy(io.Discard, mr)
			return err
		}
		if err != nil {
			return &readError{err: err}
		}
		if err := x.entry(ctx, hdr, tr); err != nil {
			return err
		}
	}
}

// buildErr turns a build failure into the one-line error a person sees.
func (s *Store) buildErr(src *source, err error) error {
	var re *readError
	var ee *escapeError
	var te *transport.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("import %s: %w", src.name, err)
	case diskFull(err):
		return fmt.Errorf("import %s: %w: free some space under %s", src.name, err, s.dir)
	case errors.As(err, &ee):
		return errorf(ErrInvalid, "import %s: %v: refusing an unsafe image", src.name, ee)
	case errors.As(err, &te) || errors.As(err, &ne):
		// The registry or the network failed while layers streamed in.
		return fmt.Errorf("import %s: fetch its layers: %w: check the registry and the network, then pull again", src.name, err)
	case errors.As(err, &re):
		return errorf(ErrCorrupt, "import %s: read its layers: %w: the image is damaged or unsafe; get a good copy", src.name, re.err)
	}
	return fmt.Errorf("import %s: %w", src.name, err)
}

// inject writes /.kindling: the image's configuration and, if given, the
// agent. Whatever the image had there is replaced.
func inject(r *os.Root, c Config, ag *agentFile) error {
	const dir = ".kindling"
	if err := r.RemoveAll(dir); err != nil {
		return err
	}
	if err := r.Mkdir(dir, 0o755); err != nil {
		return err
	}
	b, err := encodeGuestConfig(c)
	if err != nil {
		return err
	}
	if err := writeInRoot(r, dir+"/image.json", b, 0o644); err != nil {
		return err
	}
	if ag != nil {
		f, err := os.Open(ag.path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := writeInRoot(r, dir+"/kindling-agent", f, 0o755); err != nil {
			return err
		}
	}
	if err := r.Lchown(dir, 0, 0); err != nil {
		return err
	}
	return r.Chmod(dir, 0o755)
}

// writeInRoot creates name in r with the given content (bytes or a
// reader), owned by root, with mode perm whatever the umask.
func writeInRoot(r *os.Root, name string, content any, perm os.FileMode) error {
	f, err := r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	switch c := content.(type) {
	case []byte:
		_, err = f.Write(c)
	case io.Reader:
		_, err = io.Copy(f, c)
	}
	if err == nil {
		err = f.Chown(0, 0)
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
