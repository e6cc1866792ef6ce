package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// Mode says what the guest does once its message is printed.
type Mode int

const (
	// Halt prints the message, then idles on hlt forever: the VM stays
	// Running and uses no host CPU.
	Halt Mode = iota
	// PowerOff prints the message, then powers the VM off with an i8042
	// reset (byte 0xFE to port 0x64); Firecracker then exits with status 0.
	PowerOff
)

// String returns "halt" or "poweroff".
func (m Mode) String() string {
	switch m {
	case Halt:
		return "halt"
	case PowerOff:
		return "poweroff"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// MaxMessageLen is the longest message accepted, not counting the trailing
// newline Build adds when it is missing.
const MaxMessageLen = 4096

// LoadAddr is the guest-physical (and virtual) address the guest's single
// segment is linked and loaded at: 16 MiB.
const LoadAddr = 0x1000000

var (
	// ErrInvalidOptions is returned by Build for a message or mode it cannot
	// turn into a guest.
	ErrInvalidOptions = errors.New("invalid guest options")
	// ErrNotGuest is returned by Parse for bytes that are not a guest written
	// by this package.
	ErrNotGuest = errors.New("not a kindling guest")
)

// Options describe a guest.
type Options struct {
	// Message is printed on the serial console (COM1). Build adds a trailing
	// "\n" when it is missing. It holds printable ASCII (0x20-0x7e), tabs and
	// newlines only, at most MaxMessageLen bytes before the added newline.
	Message string
	// Mode says what the guest does after printing.
	Mode Mode
}

// Validate reports whether Build accepts o.
func (o Options) Validate() error {
	if o.Mode != Halt && o.Mode != PowerOff {
		return fmt.Errorf("%w: unknown mode %d", ErrInvalidOptions, int(o.Mode))
	}
	if len(o.Message) > MaxMessageLen+1 ||
		(len(o.Message) == MaxMessageLen+1 && o.Message[MaxMessageLen] != '\n') {
		return fmt.Errorf("%w: message is %d bytes, the limit is %d", ErrInvalidOptions, len(o.Message), MaxMessageLen)
	}
	for i := 0; i < len(o.Message); i++ {
		c := o.Message[i]
		if (c < 0x20 || c > 0x7e) && c != '\n' && c != '\t' {
			return fmt.Errorf("%w: message byte 0x%02x at offset %d is not printable ASCII", ErrInvalidOptions, c, i)
		}
	}
	return nil
}

// Output returns the exact bytes the guest writes to its serial console: the
// message with its trailing newline.
func (o Options) Output() string {
	if len(o.Message) > 0 && o.Message[len(o.Message)-1] == '\n' {
		return o.Message
	}
	return o.Message + "\n"
}

// File layout. Everything lives in one PT_LOAD segment that covers the whole
// file, loaded at LoadAddr:
//
//	0x00  ELF64 header (64 bytes)
//	0x40  the only program header (56 bytes)
//	0x78  zero padding
//	0x80  identification header (32 bytes, see below)
//	0xa0  code (entry point)
//	....  message bytes
//
// The identification header:
//
//	0x00  magic "KINDLING-GUEST\x00\x00" (16 bytes)
//	0x10  format version, uint32 little-endian (1)
//	0x14  mode, uint32
//	0x18  message length in bytes, newline included, uint32
//	0x1c  reserved, zero
const (
	ehdrSize   = 64
	phdrSize   = 56
	identOff   = 0x80
	identSize  = 32
	codeOff    = identOff + identSize
	fmtVersion = 1
)

var magic = [16]byte{'K', 'I', 'N', 'D', 'L', 'I', 'N', 'G', '-', 'G', 'U', 'E', 'S', 'T'}

// code returns the machine code for a message of msgLen bytes. The message
// follows the code directly, so its RIP-relative displacement is the
// distance from the end of the lea instruction to the end of the code.
func code(mode Mode, msgLen int) []byte {
	var c []byte
	c = append(c, 0x66, 0xba, 0xf8, 0x03) // mov dx, 0x3f8      ; COM1 data port
	c = append(c, 0x48, 0x8d, 0x35)       // lea rsi, [rip+disp32] ; the message
	leaDisp := len(c)
	c = append(c, 0, 0, 0, 0)
	leaEnd := len(c)
	c = append(c, 0xb9) // mov ecx, imm32       ; message length
	c = binary.LittleEndian.AppendUint32(c, uint32(msgLen))
	c = append(c, 0xfc)       // cld                  ; outsb counts upwards
	c = append(c, 0xf3, 0x6e) // rep outsb            ; byte [rsi] -> port dx, rcx times
	if mode == PowerOff {
		c = append(c, 0xb0, 0xfe) // mov al, 0xfe       ; i8042 "pulse reset line"
		c = append(c, 0xe6, 0x64) // out 0x64, al       ; Firecracker powers off
	}
	c = append(c, 0xf4)       // hlt                  ; idle (interrupts are off)
	c = append(c, 0xeb, 0xfd) // jmp .-1              ; back to the hlt, forever
	binary.LittleEndian.PutUint32(c[leaDisp:], uint32(len(c)-leaEnd))
	return c
}

// Build returns the bytes of an ELF executable for o.
func Build(o Options) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	msg := o.Output()
	c := code(o.Mode, len(msg))
	size := codeOff + len(c) + len(msg)
	b := make([]byte, codeOff, size)
	le := binary.LittleEndian

	// ELF header.
	copy(b, "\x7fELF")
	b[4] = 2                               // EI_CLASS: ELFCLASS64
	b[5] = 1                               // EI_DATA: little-endian
	b[6] = 1                               // EI_VERSION: EV_CURRENT
	le.PutUint16(b[16:], 2)                // e_type: ET_EXEC
	le.PutUint16(b[18:], 62)               // e_machine: EM_X86_64
	le.PutUint32(b[20:], 1)                // e_version
	le.PutUint64(b[24:], LoadAddr+codeOff) // e_entry
	le.PutUint64(b[32:], ehdrSize)         // e_phoff
	le.PutUint16(b[52:], ehdrSize)         // e_ehsize
	le.PutUint16(b[54:], phdrSize)         // e_phentsize
	le.PutUint16(b[56:], 1)                // e_phnum

	// Program header: one loadable, readable, executable segment.
	p := b[ehdrSize:]
	le.PutUint32(p[0:], 1)             // p_type: PT_LOAD
	le.PutUint32(p[4:], 5)             // p_flags: PF_R|PF_X
	le.PutUint64(p[16:], LoadAddr)     // p_vaddr
	le.PutUint64(p[24:], LoadAddr)     // p_paddr
	le.PutUint64(p[32:], uint64(size)) // p_filesz
	le.PutUint64(p[40:], uint64(size)) // p_memsz
	le.PutUint64(p[48:], 0x1000)       // p_align

	// Identification header.
	h := b[identOff:]
	copy(h, magic[:])
	le.PutUint32(h[16:], fmtVersion)
	le.PutUint32(h[20:], uint32(o.Mode))
	le.PutUint32(h[24:], uint32(len(msg)))

	b = append(b, c...)
	b = append(b, msg...)
	return b, nil
}

// Parse recognises a guest written by Build and returns its options, with
// Message as the guest prints it (trailing newline included), so that
// Build(opts) gives back b exactly. Anything else gives an error matching
// ErrNotGuest.
func Parse(b []byte) (Options, error) {
	if len(b) < codeOff || !bytes.Equal(b[:4], []byte("\x7fELF")) {
		return Options{}, fmt.Errorf("%w: no ELF header", ErrNotGuest)
	}
	h := b[identOff : identOff+identSize]
	if !bytes.Equal(h[:16], magic[:]) {
		return Options{}, fmt.Errorf("%w: no identification header", ErrNotGuest)
	}
	le := binary.LittleEndian
	if v := le.Uint32(h[16:]); v != fmtVersion {
		return Options{}, fmt.Errorf("%w: unknown format version %d", ErrNotGuest, v)
	}
	mode := Mode(le.Uint32(h[20:]))
	msgLen := uint64(le.Uint32(h[24:]))
	if msgLen == 0 || msgLen > MaxMessageLen+1 || uint64(len(b)) < codeOff+msgLen {
		return Options{}, fmt.Errorf("%w: bad message length %d", ErrNotGuest, msgLen)
	}
	o := Options{Message: string(b[uint64(len(b))-msgLen:]), Mode: mode}
	if o.Message[len(o.Message)-1] != '\n' {
		return Options{}, fmt.Errorf("%w: message does not end in a newline", ErrNotGuest)
	}
	want, err := Build(o)
	if err != nil {
		return Options{}, fmt.Errorf("%w: %w", ErrNotGuest, err)
	}
	if !bytes.Equal(want, b) {
		return Options{}, fmt.Errorf("%w: contents differ from a %s guest printing %d bytes", ErrNotGuest, mode, msgLen)
	}
	return o, nil
}

// WriteFile builds the guest for o and writes it to path with mode 0644.
func WriteFile(path string, o Options) error {
	b, err := Build(o)
	if err != nil {
		return fmt.Errorf("write guest %q: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write guest: %w", err)
	}
	return nil
}
