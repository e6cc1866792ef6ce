package guest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildParseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Options
		want Options // what Parse gives back
	}{
		{"halt", Options{Message: "hello", Mode: Halt}, Options{Message: "hello\n", Mode: Halt}},
		{"poweroff", Options{Message: "bye", Mode: PowerOff}, Options{Message: "bye\n", Mode: PowerOff}},
		{"newline kept", Options{Message: "ready\n"}, Options{Message: "ready\n"}},
		{"empty", Options{}, Options{Message: "\n"}},
		{"multi-line and tab", Options{Message: "a\tb\nc"}, Options{Message: "a\tb\nc\n"}},
		{"max", Options{Message: strings.Repeat("x", MaxMessageLen)}, Options{Message: strings.Repeat("x", MaxMessageLen) + "\n"}},
		{"max with newline", Options{Message: strings.Repeat("y", MaxMessageLen) + "\n", Mode: PowerOff}, Options{Message: strings.Repeat("y", MaxMessageLen) + "\n", Mode: PowerOff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(tt.in)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
			if got.Output() != tt.want.Message || tt.in.Output() != tt.want.Message {
				t.Fatalf("Output: got %q and %q, want %q", got.Output(), tt.in.Output(), tt.want.Message)
			}
			again, err := Build(got)
			if err != nil {
				t.Fatalf("Build(Parse(b)): %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Fatal("Build(Parse(b)) differs from b")
			}
		})
	}
}

// TestELF checks the file with the standard library's ELF reader: what a
// loader such as Firecracker's looks at.
func TestELF(t *testing.T) {
	for _, mode := range []Mode{Halt, PowerOff} {
		t.Run(mode.String(), func(t *testing.T) {
			b, err := Build(Options{Message: "hi", Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			f, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("elf.NewFile: %v", err)
			}
			if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
				t.Fatalf("header: class %v data %v machine %v type %v", f.Class, f.Data, f.Machine, f.Type)
			}
			if len(f.Progs) != 1 {
				t.Fatalf("%d program headers, want 1", len(f.Progs))
			}
			p := f.Progs[0]
			if p.Type != elf.PT_LOAD || p.Paddr != LoadAddr || p.Vaddr != LoadAddr || p.Off != 0 ||
				p.Filesz != uint64(len(b)) || p.Memsz != p.Filesz || p.Flags != elf.PF_R|elf.PF_X {
				t.Fatalf("program header: %+v", p.ProgHeader)
			}
			if f.Entry < LoadAddr+codeOff || f.Entry >= LoadAddr+uint64(len(b)) {
				t.Fatalf("entry %#x outside the segment", f.Entry)
			}
			// The lea must point at the message, which ends the file.
			c := b[f.Entry-LoadAddr:]
			if !bytes.Equal(c[:7], []byte{0x66, 0xba, 0xf8, 0x03, 0x48, 0x8d, 0x35}) {
				t.Fatalf("code starts % x", c[:7])
			}
			leaEnd := f.Entry - LoadAddr + 11
			msgOff := leaEnd + uint64(binary.LittleEndian.Uint32(c[7:]))
			if got := string(b[msgOff:]); got != "hi\n" {
				t.Fatalf("lea points at %q, want the message", got)
			}
			if n := binary.LittleEndian.Uint32(c[12:]); n != 3 {
				t.Fatalf("mov ecx, %d; want 3", n)
			}
			hasReset := bytes.Contains(c, []byte{0xb0, 0xfe, 0xe6, 0x64})
			if hasReset != (mode == PowerOff) {
				t.Fatalf("i8042 reset present = %v for mode %v", hasReset, mode)
			}
			if !bytes.Contains(c, []byte{0xf4, 0xeb, 0xfd}) {
				t.Fatal("no hlt loop")
			}
		})
	}
}

func TestBuildInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   Options
	}{
		{"negative mode", Options{Message: "x", Mode: -1}},
		{"unknown mode", Options{Message: "x", Mode: 2}},
		{"too long", Options{Message: strings.Repeat("x", MaxMessageLen+1)}},
		{"too long with newline", Options{Message: strings.Repeat("x", MaxMessageLen+1) + "\n"}},
		{"control byte", Options{Message: "bell\a"}},
		{"carriage return", Options{Message: "a\r\n"}},
		{"nul", Options{Message: "a\x00b"}},
		{"non-ascii", Options{Message: "café"}},
		{"del", Options{Message: "\x7f"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(tt.in)
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Build = %d bytes, %v; want ErrInvalidOptions", len(b), err)
			}
			if err := WriteFile(filepath.Join(t.TempDir(), "g"), tt.in); !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("WriteFile = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good, err := Build(Options{Message: "hello", Mode: PowerOff})
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"short", []byte("\x7fELF")},
		{"header only", good[:codeOff]},
		{"truncated", good[:len(good)-1]},
		{"extra byte", append(bytes.Clone(good), 0)},
		{"not elf", edit(func(b []byte) []byte { b[0] = 0; return b })},
		{"other elf", edit(func(b []byte) []byte { copy(b[identOff:], "SOMETHING-ELSE"); return b })},
		{"version 2", edit(func(b []byte) []byte { b[identOff+16] = 2; return b })},
		{"bad mode", edit(func(b []byte) []byte { b[identOff+20] = 7; return b })},
		{"mode flipped", edit(func(b []byte) []byte { b[identOff+20] = byte(Halt); return b })},
		{"zero length", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[identOff+24:], 0); return b })},
		{"huge length", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[identOff+24:], 1<<31); return b })},
		{"length too big for file", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[identOff+24:], 4000); return b })},
		{"wrong length", edit(func(b []byte) []byte { b[identOff+24]--; return b })},
		{"code changed", edit(func(b []byte) []byte { b[codeOff] = 0x90; return b })},
		{"entry changed", edit(func(b []byte) []byte { b[24]++; return b })},
		{"paddr changed", edit(func(b []byte) []byte { b[ehdrSize+24]++; return b })},
		{"message byte changed", edit(func(b []byte) []byte { b[len(b)-2] = 0x01; return b })},
		{"no newline", edit(func(b []byte) []byte { b[len(b)-1] = 'x'; return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Parse(tt.in)
			if !errors.Is(err, ErrNotGuest) {
				t.Fatalf("Parse = %+v, %v; want ErrNotGuest", o, err)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "guest.elf")
	o := Options{Message: "from a file", Mode: Halt}
	if err := WriteFile(p, o); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644&^currentUmask(t) {
		t.Errorf("mode %v, want 0644 (less umask)", fi.Mode().Perm())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != "from a file\n" || got.Mode != Halt {
		t.Fatalf("Parse = %+v", got)
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "missing", "g"), o); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
}

// currentUmask reads the process umask from /proc without changing it.
func currentUmask(t *testing.T) os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("read umask: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			var m uint32
			for _, c := range strings.TrimSpace(v) {
				m = m*8 + uint32(c-'0')
			}
			return os.FileMode(m)
		}
	}
	t.Skip("no Umask line in /proc/self/status")
	return 0
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Halt: "halt", PowerOff: "poweroff", 9: "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("Mode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, o := range []Options{{Message: "x"}, {Message: "hello world", Mode: PowerOff}, {}} {
		b, err := Build(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrNotGuest) {
				t.Fatalf("Parse error %v does not match ErrNotGuest", err)
			}
			return
		}
		again, err := Build(o)
		if err != nil {
			t.Fatalf("Parse accepted %+v but Build rejects it: %v", o, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Parse accepted bytes that Build(%+v) does not produce", o)
		}
	})
}
