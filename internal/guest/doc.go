// Package guest writes kindling's tiny x86-64 guest: a freestanding ELF
// executable, linked at 16 MiB, that prints a message on the COM1 serial port
// and then either halts forever or powers the VM off.
//
// Firecracker loads it as a kernel and enters it in 64-bit long mode; it boots
// in milliseconds where a real Linux guest cannot (nested KVM), so tests and
// benchmarks use it to check boot, console capture, guest power-off,
// pause/resume and snapshots for real. The CLI embeds it as the demo guest and
// the fake Firecracker (internal/fakefc) uses Parse to print what it would.
//
// The file is one loadable segment holding the ELF headers, an identification
// header (magic "KINDLING-GUEST", format version, mode, message length), a
// dozen hand-assembled instructions and the message. Parse accepts exactly
// the bytes Build produces and nothing else.
//
// It is not a boot loader or a kernel: there is no interrupt handling, no
// stack use and no input.
package guest
