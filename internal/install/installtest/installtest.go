// Package installtest serves Firecracker release archives for the tests of
// package install and of the kindling CLI: archives with the layout of the
// official releases (release-vX.Y.Z-ARCH/firecracker-vX.Y.Z-ARCH, jailer-…,
// the other tools, SHA256SUMS), built in the test around any executable
// (the fake Firecracker), from an HTTP server on loopback that can also
// misbehave on request.
//
// Only tests import it.
package installtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Member is one file of a release archive.
type Member struct {
	Name     string // path in the archive
	Body     []byte
	Typeflag byte   // tar.TypeReg when 0
	Link     string // target of a link
}

// Release is a Firecracker release to serve.
type Release struct {
	Version string // "v1.14.2"
	Arch    string // "x86_64"
	// Firecracker and Jailer are the executables' contents.
	Firecracker, Jailer []byte
}

// NewRelease returns release version for x86_64 around the firecracker
// executable fc, with a small script as its jailer.
func NewRelease(version string, fc []byte) Release {
	return Release{Version: version, Arch: "x86_64", Firecracker: fc, Jailer: []byte("#!/bin/sh\necho jailer " + version + "\n")}
}

func (r Release) suffix() string { return r.Version + "-" + r.Arch }

// Top is the archive's directory: "release-v1.14.2-x86_64/".
func (r Release) Top() string { return "release-" + r.suffix() + "/" }

// ArchiveName is the release asset: "firecracker-v1.14.2-x86_64.tgz".
func (r Release) ArchiveName() string { return "firecracker-" + r.suffix() + ".tgz" }

// MemberName is the name in the archive of one of its programs
// ("firecracker", "jailer", …): "release-v1.14.2-x86_64/jailer-v1.14.2-x86_64".
func (r Release) MemberName(program string) string {
	return r.Top() + program + "-" + r.suffix()
}

// Files returns the archive's files other than SHA256SUMS, as in an
// official release.
func (r Release) Files() []Member {
	return []Member{
		{Name: r.MemberName("firecracker"), Body: r.Firecracker},
		{Name: r.MemberName("firecracker") + ".debug", Body: []byte("debug info")},
		{Name: r.MemberName("jailer"), Body: r.Jailer},
		{Name: r.MemberName("seccompiler-bin"), Body: []byte("seccompiler")},
		{Name: r.MemberName("rebase-snap"), Body: []byte("rebase-snap")},
		{Name: r.MemberName("cpu-template-helper"), Body: []byte("cpu-template-helper")},
		{Name: r.Top() + "seccomp-filter-" + r.suffix() + ".json", Body: []byte("{}")},
		{Name: r.Top() + "LICENSE", Body: []byte("license")},
	}
}

// Members returns the archive's files with a correct SHA256SUMS.
func (r Release) Members() []Member {
	files := r.Files()
	return append(files, Member{Name: r.Top() + "SHA256SUMS", Body: SHA256Sums(files)})
}

// SHA256Sums writes a SHA256SUMS for files as Firecracker's release script
// does (sha256sum of every file in the release directory, sorted, named
// "./<file>").
func SHA256Sums(files []Member) []byte {
	var lines []string
	for _, f := range files {
		i := strings.LastIndex(f.Name, "/")
		lines = append(lines, fmt.Sprintf("%s  ./%s\n", SHA256(f.Body), f.Name[i+1:]))
	}
	sort.Strings(lines)
	return []byte(strings.Join(lines, ""))
}

// SHA256 returns b's SHA-256 in hex.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TGZ writes members as a gzipped tar archive.
func TGZ(t testing.TB, members []Member) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, m := range members {
		h := &tar.Header{Name: m.Name, Mode: 0o755, Size: int64(len(m.Body)), Typeflag: m.Typeflag, Linkname: m.Link, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(m.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ChecksumFile is the .sha256.txt asset of an archive, as sha256sum prints
// it.
func ChecksumFile(name string, archive []byte) []byte {
	return []byte(SHA256(archive) + "  " + name + "\n")
}

// NewTLSServer starts a release server on loopback that speaks HTTPS with
// a new self-signed certificate valid for host (a name or an IP address),
// closed at test cleanup. CertPEM returns the certificate, for clients to
// trust.
func NewTLSServer(t testing.TB, host string) *Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{files: map[string][]byte{}, handlers: map[string]http.HandlerFunc{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	s.StartTLS()
	s.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	t.Cleanup(s.Close)
	return s
}

// CertPEM returns the certificate of a server from NewTLSServer.
func (s *Server) CertPEM() []byte { return s.certPEM }

// Server serves release assets at /<version>/<file>, as GitHub's
// releases/download does, and records the requests.
type Server struct {
	*httptest.Server
	mu       sync.Mutex        // guards the fields below
	files    map[string][]byte // by URL path
	handlers map[string]http.HandlerFunc
	requests []string
	certPEM  []byte // NewTLSServer's certificate
}

// NewServer starts a release server on loopback, closed at test cleanup.
func NewServer(t testing.TB) *Server {
	s := &Server{files: map[string][]byte{}, handlers: map[string]http.HandlerFunc{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.URL.Path)
	h := s.handlers[r.URL.Path]
	b, ok := s.files[r.URL.Path]
	s.mu.Unlock()
	switch {
	case h != nil:
		h(w, r)
	case ok:
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

// Publish serves release r: its archive, built from r.Members(), and the
// archive's checksum file. It returns the archive.
func (s *Server) Publish(t testing.TB, r Release) []byte {
	a := TGZ(t, r.Members())
	s.PublishArchive(r, a)
	return a
}

// PublishArchive serves archive as r's archive, with its true checksum.
func (s *Server) PublishArchive(r Release, archive []byte) {
	s.Put(r.Version, r.ArchiveName(), archive)
	s.Put(r.Version, r.ArchiveName()+".sha256.txt", ChecksumFile(r.ArchiveName(), archive))
}

// Put serves b as file of release version.
func (s *Server) Put(version, file string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files["/"+version+"/"+file] = b
}

// Handle serves file of release version with h.
func (s *Server) Handle(version, file string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers["/"+version+"/"+file] = h
}

// Requests returns the paths requested so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}
