package main

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the terminal end a program writes
// to, and the other end that reads what it wrote.
func openPTY(t *testing.T) (term, reader *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

// TestProgressOnTerminalOnly checks that hashing progress is drawn on a
// terminal (bytes, total and rate, then erased) and that nothing is
// reported when stderr is a pipe, a file or a buffer.
func TestProgressOnTerminalOnly(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []io.Writer{&bytes.Buffer{}, f} {
		a := &app{stderr: w}
		if report, _ := a.progressReport("hashing x"); report != nil {
			t.Errorf("progress reported to %T, which is not a terminal", w)
		}
		if opts, end := a.hashProgress("hashing x"); opts != nil {
			t.Errorf("progress option for %T, which is not a terminal", w)
		} else {
			end()
		}
	}

	term, reader := openPTY(t)
	a := &app{stderr: term}
	report, end := a.progressReport("hashing base")
	if report == nil {
		t.Fatal("no progress on a terminal")
	}
	report(1<<20, 4<<20)
	time.Sleep(2 * progressInterval)
	report(4<<20, 4<<20)
	end()
	if err := reader.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(got, []byte("\r\x1b[K")) {
		n, err := reader.Read(buf)
		if err != nil {
			t.Fatalf("read the terminal: %v; got %q", err, got)
		}
		got = append(got, buf[:n]...)
	}
	s := string(got)
	for _, want := range []string{"hashing base", "1.0 MiB / 4.0 MiB", "4.0 MiB / 4.0 MiB", "/s"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal shows %q, want it to hold %q", s, want)
		}
	}
}
