package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"v1.14.2", "v1.14.2"},
		{"1.14.2", "v1.14.2"},
		{" v1.7.0 ", "v1.7.0"},
		{"v0.25.0", "v0.25.0"},
		{"v1.14", ""},
		{"v1.14.2-rc1", ""},
		{"v1.14.x", ""},
		{"v1.+4.2", ""},
		{"v01.1.1", ""},
		{"", ""},
		{"vv1.2.3", ""},
	} {
		v, err := ParseVersion(tc.in)
		got := ""
		if err == nil {
			got = v.String()
		} else if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseVersion(%q): %v does not match ErrInvalid", tc.in, err)
		}
		if got != tc.want {
			t.Errorf("ParseVersion(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
	var ue *UnsupportedError
	if _, err := resolveVersion("0.25.2"); !errors.As(err, &ue) || ue.Version.String() != "v0.25.2" {
		t.Errorf("resolveVersion(0.25.2): %v", err)
	}
	if v, err := resolveVersion(""); err != nil || v.String() != DefaultVersion {
		t.Errorf("resolveVersion(\"\") = %v, %v", v, err)
	}
	if !slices.Contains(TestedVersions, DefaultVersion) {
		t.Errorf("DefaultVersion %s is not among the tested %q", DefaultVersion, TestedVersions)
	}
}

func TestArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "riscv64": ""} {
		got, err := Arch(goarch)
		if got != want || (want == "") != errors.Is(err, errdefs.ErrNotSupported) {
			t.Errorf("Arch(%s) = %q, %v; want %q", goarch, got, err, want)
		}
	}
}

func TestResolveBaseURL(t *testing.T) {
	t.Setenv(EnvBaseURL, "")
	for _, tc := range []struct{ in, want string }{
		{"", DefaultBaseURL},
		{"https://mirror.example/fc/", "https://mirror.example/fc"},
		{"http://10.0.0.1:8080", "http://10.0.0.1:8080"},
		{"file:///srv/firecracker", "file:///srv/firecracker"},
		{"ftp://x/y", ""},
		{"https:///nohost", ""},
		{"file://host/dir", ""},
		{"/srv/firecracker", ""},
	} {
		u, err := resolveBaseURL(tc.in)
		got := ""
		if err == nil {
			got = u.String()
		} else if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("resolveBaseURL(%q): %v does not match ErrInvalid", tc.in, err)
		}
		if got != tc.want {
			t.Errorf("resolveBaseURL(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
	t.Setenv(EnvBaseURL, "https://env.example/m")
	if u, _ := resolveBaseURL(""); u.String() != "https://env.example/m" {
		t.Errorf("from %s: %v", EnvBaseURL, u)
	}
	u, _ := resolveBaseURL("https://github.com/firecracker-microvm/firecracker/releases/download")
	want := "https://github.com/firecracker-microvm/firecracker/releases/download/v1.14.2/firecracker-v1.14.2-x86_64.tgz"
	if got := assetURL(u, Version{1, 14, 2}, release{Version{1, 14, 2}, "x86_64"}.archive()); got != want {
		t.Errorf("asset URL %q, want %q", got, want)
	}
}

func TestParseSums(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("B", 64)
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{a + "  ./firecracker-v1.14.2-x86_64\n" + b + "  ./jailer-v1.14.2-x86_64\n",
			map[string]string{"firecracker-v1.14.2-x86_64": a, "jailer-v1.14.2-x86_64": strings.ToLower(b)}},
		{a + " *fc.tgz\r\n\n", map[string]string{"fc.tgz": a}},
		{a + "\n", map[string]string{"": a}},
		{"", nil},
		{"abc  x\n", nil},
		{strings.Repeat("g", 64) + "  x\n", nil},
		{a + "  x\n" + a + "  x\n", nil},
	} {
		got, err := parseSums([]byte(tc.in))
		if (err != nil) != (tc.want == nil) || len(got) != len(tc.want) {
			t.Errorf("parseSums(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("parseSums(%q)[%q] = %q, want %q", tc.in, k, got[k], v)
			}
		}
	}
}

func FuzzParseSums(f *testing.F) {
	f.Add([]byte(strings.Repeat("0", 64) + "  ./firecracker-v1.14.2-x86_64\n"))
	f.Add([]byte(strings.Repeat("f", 64) + " *x\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sums, err := parseSums(b)
		if err != nil {
			return
		}
		for name, sum := range sums {
			if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
				t.Errorf("%q: digest %q is not lower-case hex SHA-256", name, sum)
			}
		}
	})
}

// TestManifestGolden pins release.json's form.
func TestManifestGolden(t *testing.T) {
	m := manifest{
		FormatVersion: manifestVersion,
		Release:       "v1.14.2",
		Arch:          "x86_64",
		Source:        DefaultBaseURL + "/v1.14.2/firecracker-v1.14.2-x86_64.tgz",
		ArchiveSHA256: strings.Repeat("a", 64),
		SHA256:        map[string]string{"firecracker": strings.Repeat("b", 64), "jailer": strings.Repeat("c", 64)},
		InstalledAt:   time.Date(2026, 12, 1, 1, 2, 3, 0, time.UTC),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	golden := filepath.Join("testdata", "release.json")
	if *update {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("release.json is\n%s\nwant (%s)\n%s", b, golden, want)
	}
	var back manifest
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if r := back.release("/d"); r.FirecrackerSHA256 != m.SHA256["firecracker"] || r.Firecracker != "/d/v1.14.2/firecracker" {
		t.Errorf("release from the golden manifest: %+v", r)
	}
}

func ExampleParseVersion() {
	for _, s := range []string{"1.14.2", "v1.7.0", "v0.25.2"} {
		v, _ := ParseVersion(s)
		fmt.Println(v, v.Less(Version{Major: 1}))
	}
	// Output:
	// v1.14.2 false
	// v1.7.0 false
	// v0.25.2 true
}

// TestExtractCancelled: a cancel during the extraction stops it, as such.
