package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir and
// returns their paths and a pool trusting it.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kindlingd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// A TCP listener with TLS: the Go client reaches it with the server's CA
// and a key; without a key, or without trusting the certificate, it is
// refused.
func TestTCPWithTLS(t *testing.T) {
	root := testutil.ShortTempDir(t)
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	const apiKey = "tls-test-key-0123456789"
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, root, "--listen", "tcp://127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--api-key-file", keys)
	m := regexp.MustCompile(`addr=tcp://(127\.0\.0\.1:\d+)`).FindStringSubmatch(d.output.String())
	if m == nil {
		t.Fatalf("no tcp address in the log:\n%s", d.output)
	}
	ctx := context.Background()
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := remote.New(remote.Config{Host: "https://" + m[1], APIKey: apiKey, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.List(ctx, sandbox.ListOptions{}); err != nil {
		t.Fatalf("list over TLS with a key: %v", err)
	}
	nokey, err := remote.New(remote.Config{Host: "https://" + m[1], TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer nokey.Close()
	if _, err := nokey.List(ctx, sandbox.ListOptions{}); err == nil {
		t.Fatal("list over TCP without a key was served")
	}
	// A client that does not trust the certificate does not get in.
	untrusting, err := remote.New(remote.Config{Host: "https://" + m[1], APIKey: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	defer untrusting.Close()
	if _, err := untrusting.List(ctx, sandbox.ListOptions{}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("list without trusting the certificate: %v", err)
	}
}
