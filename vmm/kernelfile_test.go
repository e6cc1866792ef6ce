package vmm

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/guest"
)

// elfHeader returns an ELF file header with the given class, byte order,
// type and machine, padded to the length the check reads.
func elfHeader(class, data byte, typ, machine uint16) []byte {
	b := make([]byte, kernelSniffLen)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = class, data, 1
	binary.LittleEndian.PutUint16(b[16:], typ)
	binary.LittleEndian.PutUint16(b[18:], machine)
	return b
}

// bzImageHeader returns the start of an x86 bzImage: a boot sector, then
// the "HdrS" boot protocol header.
func bzImageHeader() []byte {
	b := make([]byte, 0x400)
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[bzImageMagicAt:], "HdrS")
	return b
}

// arm64Image returns the start of an arm64 kernel Image.
func arm64Image() []byte {
	b := make([]byte, 64)
	copy(b, "MZ")
	copy(b[arm64MagicAt:], "ARM\x64")
	return b
}

func TestKernelProblem(t *testing.T) {
	testGuest, err := guest.Build(guest.Options{Message: "kernel format"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		head    []byte
		arch    string
		problem string // "" for accepted
	}{
		{"test guest", testGuest, "amd64", ""},
		{"x86-64 vmlinux", elfHeader(2, 1, 2, 62), "amd64", ""},
		{"text file", []byte("#!/bin/sh\necho not a kernel\n"), "amd64", "not an ELF file, so not an uncompressed kernel"},
		{"empty file", nil, "amd64", "an empty file, not a kernel"},
		{"bzImage", bzImageHeader(), "amd64", "a bzImage (a compressed kernel), not an uncompressed vmlinux ELF"},
		{"gzip", []byte{0x1f, 0x8b, 8, 0}, "amd64", "a gzip-compressed file"},
		{"arm64 Image on x86", arm64Image(), "amd64", "an arm64 kernel Image, not for this machine"},
		{"aarch64 ELF", elfHeader(2, 1, 2, 183), "amd64", "an ELF file for another machine (aarch64), not x86-64"},
		{"32-bit ELF", elfHeader(1, 1, 2, 3), "amd64", "a 32-bit ELF file, not an x86-64 kernel"},
		{"big-endian ELF", elfHeader(2, 2, 2, 62), "amd64", "a big-endian ELF file"},
		{"shared object", elfHeader(2, 1, 3, 62), "amd64", "an ELF shared object or position-independent program, not a kernel"},
		{"object file", elfHeader(2, 1, 1, 62), "amd64", "an ELF relocatable object (.o), not a kernel"},
		{"truncated ELF", []byte("\x7fELF\x02\x01"), "amd64", "a truncated ELF file"},
		{"arm64 Image", arm64Image(), "arm64", ""},
		{"vmlinux on arm64", elfHeader(2, 1, 2, 183), "arm64", "an ELF file: Firecracker on aarch64 boots the kernel's Image, not vmlinux"},
		{"text on arm64", []byte("hello"), "arm64", "not an ELF file"},
		{"other architecture", []byte("hello"), "riscv64", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problem, fix := kernelProblem(tt.head, tt.arch)
			if tt.problem == "" {
				if problem != "" || fix != "" {
					t.Fatalf("kernelProblem = %q, %q; want it accepted", problem, fix)
				}
				return
			}
			if !strings.HasPrefix(problem, tt.problem) {
				t.Errorf("kernelProblem = %q, want it to start %q", problem, tt.problem)
			}
			if fix == "" {
				t.Errorf("kernelProblem(%s) gives no fix", tt.name)
			}
		})
	}
}

// TestValidateKernelFormat: Validate refuses a kernel file Firecracker
// cannot boot, with one line naming the file, and accepts the test guest.
func TestValidateKernelFormat(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the test guest and these files are x86-64 kernels; this host is " + runtime.GOARCH)
	}
	f := newFixture(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want string // the whole message; "" for valid
	}{
		{"test guest", f.kernel, ""},
		{"bzImage", write("bzImage", bzImageHeader()),
			`kernel "` + f.dir + `/bzImage": a bzImage (a compressed kernel), not an uncompressed vmlinux ELF (give an uncompressed vmlinux ELF: the vmlinux at the top of a kernel build tree, not arch/x86/boot/bzImage)`},
		{"text", write("notes.txt", []byte("hello\n")),
			`kernel "` + f.dir + `/notes.txt": not an ELF file, so not an uncompressed kernel (give an uncompressed vmlinux ELF: the vmlinux at the top of a kernel build tree, not arch/x86/boot/bzImage)`},
		{"aarch64 ELF", write("vmlinux-arm", elfHeader(2, 1, 2, 183)),
			`kernel "` + f.dir + `/vmlinux-arm": an ELF file for another machine (aarch64), not x86-64 (give an uncompressed vmlinux ELF: the vmlinux at the top of a kernel build tree, not arch/x86/boot/bzImage)`},
		// A missing kernel is one problem, reported once.
		{"missing", "/x/vmlinux", `kernel "/x/vmlinux": no such file (give the path of an uncompressed kernel image)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Firecracker: f.firecracker, Kernel: tt.path, RunDir: f.dir}
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate = %v\nwant       %s", err, tt.want)
			}
		})
	}
}
