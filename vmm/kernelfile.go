package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
)

// The kernel formats Firecracker boots: on x86_64 an uncompressed ELF
// vmlinux (with or without a PVH note, which is inside the ELF), on aarch64
// the kernel's "Image" (a PE file with an arm64 header).
const (
	elfHeaderSize  = 64    // an ELF64 file header
	elfClass64     = 2     // e_ident[EI_CLASS]: ELFCLASS64
	elfDataLSB     = 1     // e_ident[EI_DATA]: ELFDATA2LSB
	elfTypeExec    = 2     // e_type: ET_EXEC
	elfMachineX86  = 62    // e_machine: EM_X86_64
	elfMachineARM  = 183   // e_machine: EM_AARCH64
	bzImageMagicAt = 0x202 // "HdrS", the x86 boot protocol header
	arm64MagicAt   = 56    // "ARM\x64", the arm64 Image header
	kernelSniffLen = bzImageMagicAt + 4
)

// kernelFormat checks that the kernel file at p is one Firecracker can boot
// on this host's architecture, so that a wrong file is refused before
// anything is spawned (Firecracker would take a bzImage or a text file and
// fail only at InstanceStart, or a guest would hang). A file that cannot be
// opened is left to regularFile to report.
func (v *validator) kernelFormat(p string) {
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	}
	head := make([]byte, kernelSniffLen)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		v.add("kernel", strconv.Quote(p), "cannot be read: "+err.Error(), "")
		return
	}
	if problem, fix := kernelProblem(head[:n], runtime.GOARCH); problem != "" {
		v.add("kernel", strconv.Quote(p), problem, fix)
	}
}

// kernelProblem says what is wrong with a kernel file that starts with
// head, for a host of architecture arch (GOARCH); "" when nothing is. fix
// says what to give instead.
func kernelProblem(head []byte, arch string) (problem, fix string) {
	switch arch {
	case "amd64":
		const fix = "give an uncompressed vmlinux ELF: the vmlinux at the top of a kernel build tree, not arch/x86/boot/bzImage"
		if p := elfProblem(head, elfMachineX86, "x86-64"); p != "" {
			return p, fix
		}
		return "", ""
	case "arm64":
		const fix = "give the uncompressed arm64 Image: arch/arm64/boot/Image of a kernel build tree"
		if len(head) >= arm64MagicAt+4 && string(head[arm64MagicAt:arm64MagicAt+4]) == "ARM\x64" {
			return "", ""
		}
		if isELF(head) {
			return "an ELF file: Firecracker on aarch64 boots the kernel's Image, not vmlinux", fix
		}
		return describeNonKernel(head), fix
	}
	return "", "" // Firecracker runs on no other architecture: nothing to say
}

// elfProblem checks for an ELF64 little-endian executable for machine.
func elfProblem(head []byte, machine uint16, machineName string) string {
	if !isELF(head) {
		return describeNonKernel(head)
	}
	if len(head) < elfHeaderSize {
		return "a truncated ELF file (shorter than its header)"
	}
	if head[4] != elfClass64 {
		return "a 32-bit ELF file, not an " + machineName + " kernel"
	}
	if head[5] != elfDataLSB {
		return "a big-endian ELF file, not an " + machineName + " kernel"
	}
	if m := binary.LittleEndian.Uint16(head[18:20]); m != machine {
		return fmt.Sprintf("an ELF file for another machine (%s), not %s", elfMachineName(m), machineName)
	}
	switch t := binary.LittleEndian.Uint16(head[16:18]); t {
	case elfTypeExec:
		return ""
	case 1:
		return "an ELF relocatable object (.o), not a kernel"
	case 3:
		return "an ELF shared object or position-independent program, not a kernel"
	case 4:
		return "an ELF core dump, not a kernel"
	default:
		return fmt.Sprintf("an ELF file of type %d, not an executable kernel", t)
	}
}

func isELF(head []byte) bool { return bytes.HasPrefix(head, []byte("\x7fELF")) }

// describeNonKernel names what a file that is not an ELF seems to be.
func describeNonKernel(head []byte) string {
	switch {
	case len(head) == 0:
		return "an empty file, not a kernel"
	case len(head) >= bzImageMagicAt+4 && string(head[bzImageMagicAt:bzImageMagicAt+4]) == "HdrS":
		return "a bzImage (a compressed kernel), not an uncompressed vmlinux ELF"
	case len(head) >= arm64MagicAt+4 && string(head[arm64MagicAt:arm64MagicAt+4]) == "ARM\x64":
		return "an arm64 kernel Image, not for this machine"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return "a gzip-compressed file, not an uncompressed kernel"
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "an xz-compressed file, not an uncompressed kernel"
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "a zstd-compressed file, not an uncompressed kernel"
	case bytes.HasPrefix(head, []byte("MZ")):
		return "a PE/EFI file, not an uncompressed vmlinux ELF"
	}
	return "not an ELF file, so not an uncompressed kernel"
}

// elfMachineName names the common e_machine values.
func elfMachineName(m uint16) string {
	switch m {
	case 3:
		return "i386"
	case 40:
		return "ARM"
	case elfMachineX86:
		return "x86-64"
	case elfMachineARM:
		return "aarch64"
	case 243:
		return "RISC-V"
	}
	return "e_machine " + strconv.Itoa(int(m))
}
