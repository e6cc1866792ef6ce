package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleLogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	const limit = 100
	c, err := openConsoleLog(path, limit)
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
		c, err := openConsoleLog(path, 0)
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
