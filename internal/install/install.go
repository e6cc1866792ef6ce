package install

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// Options say what Install fetches and where it puts it. The zero value
// installs DefaultVersion for this host into DefaultDir.
type Options struct {
	// Version is the release, "v1.14.2" or "1.14.2"; "" for DefaultVersion.
	Version string
	// BaseURL is where releases are fetched from; "" for $KINDLING_RELEASE_URL,
	// else DefaultBaseURL.
	BaseURL string
	// Dir is the install directory; "" for DefaultDir.
	Dir string
	// Arch is Firecracker's architecture name; "" for this host's.
	Arch string
	// Client makes the requests; nil for one that honours the proxy
	// environment variables (HTTPS_PROXY, NO_PROXY) and reads file:// URLs.
	Client *http.Client
	// Progress, when set, is called as the archive downloads.
	Progress func(Progress)
}

// Progress reports a download under way.
type Progress struct {
	// File is the asset's name.
	File string
	// Done is the number of bytes received so far; Total the size, or -1
	// when the server does not say.
	Done, Total int64
}

// Limits on what is read from the network and the archive.
const (
	maxChecksumFile = 64 << 10
	maxSumsFile     = 1 << 20
	maxExecutable   = 512 << 20
	// responseHeaderTimeout bounds the wait for a server's answer; the
	// body, which can take long on a slow link, is bounded by the caller's
	// context only.
	responseHeaderTimeout = 30 * time.Second
)

// DownloadError is a failed download: no answer, an answer other than 200,
// or a body cut short. A 404 matches errdefs.ErrNotFound, anything else
// errdefs.ErrUnavailable.
type DownloadError struct {
	URL        string
	StatusCode int    // the HTTP status, 0 when there was no answer
	Status     string // "404 Not Found"
	Err        error  // what failed, when not the status
}

func (e *DownloadError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("download %s: %v", e.URL, e.Err)
	}
	return fmt.Sprintf("download %s: %s", e.URL, e.Status)
}

func (e *DownloadError) Unwrap() error { return e.Err }

// Is matches errdefs.ErrNotFound for a 404 and errdefs.ErrUnavailable
// otherwise.
func (e *DownloadError) Is(target error) bool {
	if e.StatusCode == http.StatusNotFound {
		return target == errdefs.ErrNotFound
	}
	return target == errdefs.ErrUnavailable
}

// ChecksumError is a file whose SHA-256 is not the published one. It
// matches errdefs.ErrCorrupt.
type ChecksumError struct {
	File      string // the archive, or an executable in it
	Got, Want string // hex digests
	Source    string // where Want comes from
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("%s: SHA-256 %s does not match %s from %s", e.File, e.Got, e.Want, e.Source)
}

// Is makes the error match errdefs.ErrCorrupt.
func (e *ChecksumError) Is(target error) bool { return target == errdefs.ErrCorrupt }

// corruptError is a release file that cannot be what it claims to be. It
// matches errdefs.ErrCorrupt without saying so in its message, which
// says what is wrong.
type corruptError struct{ err error }

func (e *corruptError) Error() string        { return e.err.Error() }
func (e *corruptError) Unwrap() error        { return e.err }
func (e *corruptError) Is(target error) bool { return target == errdefs.ErrCorrupt }

func corrupt(format string, args ...any) error {
	return &corruptError{fmt.Errorf(format, args...)}
}

// Install downloads a Firecracker release, verifies it and installs its
// firecracker and jailer executables as <dir>/vX.Y.Z/{firecracker,jailer},
// then points <dir>/current at it. A release that is installed already is
// not downloaded again; it is made current.
//
// The archive is downloaded into a temporary directory inside dir and
// checked against the .sha256.txt file published beside it; the two
// executables are extracted (regular files only) and checked against the
// archive's SHA256SUMS, and the release directory appears with one rename.
// Whatever fails (a refused connection, a 404, a checksum, a truncated
// archive, a full disk, ctx cancelled), the temporary directory is removed
// and nothing is installed. Errors: ErrInvalid for a malformed version or
// URL, *UnsupportedError below v1.0, *DownloadError, *ChecksumError or
// ErrCorrupt, ErrConflict while another install runs, and file system
// errors (such as ENOSPC) wrapped.
func Install(ctx context.Context, o Options) (Release, error) {
	v, err := resolveVersion(o.Version)
	if err != nil {
		return Release{}, err
	}
	arch := o.Arch
	if arch == "" {
		if arch, err = hostArch(); err != nil {
			return Release{}, err
		}
	}
	base, err := resolveBaseURL(o.BaseURL)
	if err != nil {
		return Release{}, err
	}
	dir, err := dirOrDefault(o.Dir)
	if err != nil {
		return Release{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Release{}, fmt.Errorf("create install directory: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return Release{}, err
	}
	defer unlock()
	removeStale(dir)

	if r, err := readRelease(dir, v.String()); err == nil {
		if err := setCurrent(dir, r.Version); err != nil {
			return Release{}, err
		}
		r.Current, r.AlreadyInstalled = true, true
		return r, nil
	}
	// A directory of that name that is not a whole release (made by hand)
	// is not overwritten.
	if _, err := os.Lstat(filepath.Join(dir, v.String())); err == nil {
		return Release{}, fmt.Errorf("%s holds an incomplete release %s: %w: remove it, then install again", dir, v, errdefs.ErrExists)
	}

	stage, err := os.MkdirTemp(dir, tmpPrefix+v.String()+"-")
	if err != nil {
		return Release{}, fmt.Errorf("create a temporary directory for the download: %w", err)
	}
	defer os.RemoveAll(stage)

	client := o.client()
	if o.Client == nil {
		defer client.CloseIdleConnections()
	}
	i := &installer{
		client:   client,
		progress: o.Progress,
		base:     base,
		rel:      release{version: v, arch: arch},
		stage:    stage,
	}
	m, err := i.fetch(ctx)
	if err != nil {
		return Release{}, err
	}
	// The point of no return: once the release directory is renamed into
	// place the release is installed, whatever happens to ctx.
	if err := ctx.Err(); err != nil {
		return Release{}, fmt.Errorf("install firecracker %s: %w", v, context.Cause(ctx))
	}
	if err := os.Rename(filepath.Join(stage, v.String()), filepath.Join(dir, v.String())); err != nil {
		return Release{}, fmt.Errorf("move the release into place: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return Release{}, err
	}
	if err := setCurrent(dir, v.String()); err != nil {
		return Release{}, err
	}
	r := m.release(dir)
	r.Current = true
	return r, nil
}

func (o Options) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		IdleConnTimeout:       30 * time.Second,
	}
	t.RegisterProtocol("file", http.NewFileTransport(http.Dir("/")))
	return &http.Client{Transport: t}
}

// installer does one release's download and extraction into stage.
type installer struct {
	client   *http.Client
	progress func(Progress)
	base     *url.URL
	rel      release
	stage    string
}

// fetch downloads and verifies the release and leaves it, complete, in
// <stage>/vX.Y.Z with its manifest. It returns the manifest.
func (i *installer) fetch(ctx context.Context) (manifest, error) {
	v, rel := i.rel.version, i.rel
	sumURL := assetURL(i.base, v, rel.checksumFile())
	want, err := i.fetchChecksum(ctx, sumURL)
	if err != nil {
		return manifest{}, err
	}
	arURL := assetURL(i.base, v, rel.archive())
	arPath := filepath.Join(i.stage, rel.archive())
	got, err := i.download(ctx, arURL, arPath)
	if err != nil {
		return manifest{}, err
	}
	if got != want {
		return manifest{}, &ChecksumError{File: rel.archive(), Got: got, Want: want, Source: sumURL}
	}
	relDir := filepath.Join(i.stage, v.String())
	if err := os.Mkdir(relDir, 0o755); err != nil {
		return manifest{}, fmt.Errorf("create the release directory: %w", err)
	}
	if err := os.Chmod(relDir, 0o755); err != nil { // whatever the umask
		return manifest{}, fmt.Errorf("create the release directory: %w", err)
	}
	digests, err := extract(ctx, arPath, rel, relDir)
	if err != nil {
		return manifest{}, err
	}
	// The archive is not kept: remove it now, while the disk space it
	// takes is still counted against the stage.
	if err := os.Remove(arPath); err != nil {
		return manifest{}, fmt.Errorf("remove the downloaded archive: %w", err)
	}
	m := manifest{
		FormatVersion: manifestVersion,
		Release:       v.String(),
		Arch:          rel.arch,
		Source:        arURL,
		ArchiveSHA256: got,
		SHA256:        digests,
		InstalledAt:   time.Now().UTC().Truncate(time.Second),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return manifest{}, fmt.Errorf("encode %s: %w", manifestFile, err)
	}
	if err := writeFileSync(filepath.Join(relDir, manifestFile), bytes.NewReader(append(b, '\n')), 0o644, nil); err != nil {
		return manifest{}, err
	}
	return m, syncDir(relDir)
}

// get starts a GET of u and checks its status.
func (i *installer) get(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &DownloadError{URL: u, Err: err}
	}
	resp, err := i.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("download %s: %w", u, context.Cause(ctx))
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the repetition of method and URL
		}
		return nil, &DownloadError{URL: u, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &DownloadError{URL: u, StatusCode: resp.StatusCode, Status: resp.Status}
	}
	return resp, nil
}

// fetchChecksum reads the archive's published SHA-256 from u: one line
// "<hex>  <archive name>", as sha256sum writes it.
func (i *installer) fetchChecksum(ctx context.Context, u string) (string, error) {
	resp, err := i.get(ctx, u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxChecksumFile+1))
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("download %s: %w", u, context.Cause(ctx))
		}
		return "", &DownloadError{URL: u, Err: err}
	}
	if len(b) > maxChecksumFile {
		return "", corrupt("%s: more than %d bytes: not a checksum file", u, maxChecksumFile)
	}
	sums, err := parseSums(b)
	if err != nil || len(sums) != 1 {
		return "", corrupt("%s: not a checksum file (want one line \"<sha256>  %s\")", u, i.rel.archive())
	}
	sum, ok := sums[i.rel.archive()]
	if !ok {
		sum, ok = sums[""] // a digest alone
	}
	if !ok {
		return "", corrupt("%s: gives the checksum of another file, not %q", u, i.rel.archive())
	}
	return sum, nil
}

// download writes the body at u to the new file dst and returns its
// SHA-256.
func (i *installer) download(ctx context.Context, u, dst string) (string, error) {
	resp, err := i.get(ctx, u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	h := sha256.New()
	p := &progressWriter{file: path.Base(dst), total: resp.ContentLength, report: i.progress}
	body := io.TeeReader(resp.Body, p)
	if err := writeFileSync(dst, body, 0o600, h); err != nil {
		var re *readError
		switch {
		case ctx.Err() != nil:
			return "", fmt.Errorf("download %s: %w", u, context.Cause(ctx))
		case errors.As(err, &re):
			why := re.err
			if errors.Is(why, io.ErrUnexpectedEOF) && resp.ContentLength > 0 {
				why = fmt.Errorf("connection closed after %d of %d bytes: %w", p.done, resp.ContentLength, why)
			}
			return "", &DownloadError{URL: u, Err: why}
		}
		return "", err
	}
	if resp.ContentLength >= 0 && p.done != resp.ContentLength {
		return "", &DownloadError{URL: u, Err: fmt.Errorf("got %d of %d bytes", p.done, resp.ContentLength)}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// progressWriter counts the bytes written through it and reports them.
type progressWriter struct {
	file        string
	done, total int64
	report      func(Progress)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.report != nil {
		p.report(Progress{File: p.file, Done: p.done, Total: p.total})
	}
	return len(b), nil
}

// readError marks a failure to read the source of writeFileSync, as
// opposed to a failure to write the file.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && err != io.EOF {
		err = &readError{err: err}
	}
	return n, err
}

// writeFileSync creates the new file name with mode, copies r into it (and
// into h, when set), and syncs and closes it. A failed read of r comes back
// as a *readError; a failed write, a full disk for one, as the file
// system's error.
func writeFileSync(name string, r io.Reader, mode os.FileMode, h hash.Hash) (err error) {
	// The file system's errors are *fs.PathError, which name the file.
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	var w io.Writer = f
	if h != nil {
		w = io.MultiWriter(f, h)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := io.Copy(bw, sourceReader{r}); err != nil {
		return err // a *readError, or the file's
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // whatever the umask
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// ctxReader fails reads once ctx is done, so that a long extraction stops
// on cancel.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(b)
}

// extract reads the release archive at arPath and writes its firecracker
// and jailer executables into dir, as dir/firecracker and dir/jailer (mode
// 0755), each checked against the archive's SHA256SUMS. Nothing else is
// extracted; only regular files are taken, and a member whose name would
// leave the archive makes the whole archive refused. The archive is read
// to its end, so a truncated one is refused even when the executables come
// first. It returns the executables' digests by kind.
func extract(ctx context.Context, arPath string, rel release, dir string) (map[string]string, error) {
	f, err := os.Open(arPath)
	if err != nil {
		return nil, fmt.Errorf("open the downloaded archive: %w", err)
	}
	defer f.Close()
	name := rel.archive()
	gz, err := gzip.NewReader(ctxReader{ctx, bufio.NewReader(f)})
	if err != nil {
		return nil, archiveError(ctx, name, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)

	wanted := map[string]Kind{rel.member(Firecracker): Firecracker, rel.member(Jailer): Jailer}
	digests := map[string]string{}
	var sums map[string]string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, archiveError(ctx, name, err)
		}
		if !filepath.IsLocal(h.Name) {
			return nil, corrupt("%s: member %q points outside the archive", name, h.Name)
		}
		// Firecracker's archives hold release-vX.Y.Z-ARCH/<files>; members
		// at the top are taken too, and other directories are ignored.
		d, base := path.Split(path.Clean(h.Name))
		if d != "" && d != rel.topDir()+"/" {
			continue
		}
		kind, isExe := wanted[base]
		if !isExe && base != "SHA256SUMS" {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, corrupt("%s: member %q is not a regular file", name, h.Name)
		}
		if isExe {
			if _, dup := digests[string(kind)]; dup {
				return nil, corrupt("%s: holds %s twice", name, base)
			}
			if h.Size > maxExecutable {
				return nil, corrupt("%s: member %q is %d bytes, more than an executable of Firecracker's", name, h.Name, h.Size)
			}
			sha := sha256.New()
			if err := writeFileSync(filepath.Join(dir, string(kind)), tr, 0o755, sha); err != nil {
				var re *readError
				if errors.As(err, &re) {
					return nil, archiveError(ctx, name, re.err)
				}
				return nil, err
			}
			digests[string(kind)] = hex.EncodeToString(sha.Sum(nil))
			continue
		}
		if sums != nil {
			return nil, corrupt("%s: holds SHA256SUMS twice", name)
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxSumsFile+1))
		if err != nil {
			return nil, archiveError(ctx, name, err)
		}
		if len(b) > maxSumsFile {
			return nil, corrupt("%s: SHA256SUMS is more than %d bytes", name, maxSumsFile)
		}
		if sums, err = parseSums(b); err != nil {
			return nil, corrupt("%s: SHA256SUMS: %v", name, err)
		}
	}
	// Read what follows the tar stream too, so that a cut in the gzip
	// trailer is not missed.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, archiveError(ctx, name, err)
	}
	for _, k := range []Kind{Firecracker, Jailer} {
		if _, ok := digests[string(k)]; !ok {
			return nil, corrupt("%s: no %s/%s in the archive", name, rel.topDir(), rel.member(k))
		}
	}
	if sums == nil {
		return nil, corrupt("%s: no SHA256SUMS in the archive to verify the executables against", name)
	}
	for _, k := range []Kind{Firecracker, Jailer} {
		member := rel.member(k)
		want, ok := sums[member]
		if !ok {
			return nil, corrupt("%s: SHA256SUMS has no line for %s", name, member)
		}
		if got := digests[string(k)]; got != want {
			return nil, &ChecksumError{File: rel.topDir() + "/" + member, Got: got, Want: want, Source: "the archive's SHA256SUMS"}
		}
	}
	return digests, nil
}

// archiveError describes a failure to read the archive: the caller's
// cancel as such, anything else as a corrupt archive.
func archiveError(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("extract %s: %w", name, context.Cause(ctx))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt("%s is truncated: %w", name, err)
	}
	return corrupt("%s: %w", name, err)
}

// parseSums reads checksum lines as sha256sum writes them,
// "<64 hex digits>  <name>" ("*<name>" in binary mode), into a map from
// name (without a leading "./") to digest. A line with a digest only maps
// "" to it. Empty lines are skipped; anything else is an error.
func parseSums(b []byte) (map[string]string, error) {
	sums := map[string]string{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		sum, name, _ := strings.Cut(line, " ")
		if len(sum) != sha256.Size*2 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" {
			return nil, fmt.Errorf("line %d: no SHA-256 digest", n+1)
		}
		name = strings.TrimLeft(name, " ")
		name = strings.TrimPrefix(name, "*")
		name = strings.TrimPrefix(name, "./")
		if _, dup := sums[name]; dup {
			return nil, fmt.Errorf("line %d: %q listed twice", n+1, name)
		}
		sums[name] = strings.ToLower(sum)
	}
	if len(sums) == 0 {
		return nil, errors.New("empty")
	}
	return sums, nil
}
