package main

import (
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	c, err := parseCmdline("console=ttyS0 reboot=k kindling.hostname=web-1 kindling.vsock=unix:/run/kindling-vsock// kindling.log=debug\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.hostname != "web-1" || c.vsockDir != "/run/kindling-vsock" || c.logLevel != "debug" {
		t.Errorf("parseCmdline = %+v", c)
	}
	if c, err := parseCmdline("console=ttyS0"); err != nil || c != (cmdline{}) {
		t.Errorf("plain command line: %+v, %v", c, err)
	}
	for _, bad := range []string{"kindling.vsock=/run/x", "kindling.vsock=unix:relative", "kindling.vsock=vsock:3"} {
		if _, err := parseCmdline(bad); err == nil || !strings.Contains(err.Error(), "kindling.vsock") {
			t.Errorf("parseCmdline(%q): err = %v", bad, err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	var sb strings.Builder
	for _, bad := range [][]string{{"--listen", "tcp:1"}, {"extra"}, {"--nope"}} {
		if _, err := parseFlags(bad, &sb); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	o, err := parseFlags([]string{"--listen", "unix:/tmp/a.sock"}, &sb)
	if err != nil || o.listen != "unix:/tmp/a.sock" {
		t.Errorf("parseFlags = %+v, %v", o, err)
	}
}

// The simulated guest listens on DIR/PORT, creating DIR.
func TestListenSimVsock(t *testing.T) {
	dir := t.TempDir() + "/run/kindling-vsock"
	ln, err := listen("", cmdline{vsockDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got, want := ln.Addr().String(), dir+"/49983"; got != want {
		t.Errorf("listening on %q, want %q", got, want)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("kindling.hostname=a kindling.vsock=unix:/run/v")
	f.Add("kindling.vsock=unix:")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCmdline(s)
		if err == nil && c.vsockDir != "" && c.vsockDir[0] != '/' {
			t.Fatalf("parseCmdline(%q) accepted a relative vsock dir %q", s, c.vsockDir)
		}
	})
}
