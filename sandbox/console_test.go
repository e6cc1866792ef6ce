package sandbox

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleLogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	const limit = 100
	c, err := openConsoleLog(filepath.Dir(path), filepath.Base(path), limit, nil)
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for i := range 50 {
		line := strings.Repeat(string(rune('a'+i%26)), 7) + "\n"
		all.WriteString(line)
		if n, err := c.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > limit {
			t.Errorf("%s is %d bytes, over the limit %d", p, fi.Size(), limit)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	var got bytes.Buffer
	if err := copyLog(path, &got); err != nil {
		t.Fatal(err)
	}
	// What is kept is exactly the newest bytes written, oldest first.
	if want := all.String(); !strings.HasSuffix(want, got.String()) || got.Len() <= limit {
		t.Fatalf("console holds %d bytes %q; want a suffix of what was written longer than one file", got.Len(), got.String())
	}
}

func TestConsoleLogAppendsAcrossOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	for _, s := range []string{"one\n", "two\n"} {
		c, err := openConsoleLog(filepath.Dir(path), filepath.Base(path), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	var got bytes.Buffer
	if err := copyLog(path, &got); err != nil {
		t.Fatal(err)
	}
	if got.String() != "one\ntwo\n" {
		t.Fatalf("console = %q", got.String())
	}
}

// D15: a rotation that fails is logged, and the guest's output keeps
// being written.
func TestD15FailedRotationKeepsWriting(t *testing.T) {
	dir := t.TempDir()
	// A non-empty directory where the older part goes: the rename fails.
	if err := os.MkdirAll(filepath.Join(dir, "console.log.1", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	c, err := openConsoleLog(dir, "console.log", 10, log)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("0123456789", 5)
	for i := 0; i < len(want); i += 5 {
		if n, err := c.Write([]byte(want[i : i+5])); err != nil || n != 5 {
			t.Fatalf("Write after a failed rotation = %d, %v", n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("console.log holds %q, want everything written, %q", got, want)
	}
	if !strings.Contains(logged.String(), "console log rotation failed") {
		t.Errorf("the failed rotation was not logged: %q", logged.String())
	}
}

// D3: a console log that is a symlink is not written through.
func TestD3ConsoleLogSymlinkRefused(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "console.log")); err != nil {
		t.Fatal(err)
	}
	if c, err := openConsoleLog(dir, "console.log", 0, nil); err == nil {
		c.Close()
		t.Fatal("a symlinked console log was opened")
	}
	if b, _ := os.ReadFile(target); string(b) != "precious\n" {
		t.Errorf("the symlink's target changed: %q", b)
	}
}
