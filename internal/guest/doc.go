// Package guest writes kindling's tiny x86-64 guest: a freestanding ELF
// executable, linked at 16 MiB, that prints a message on the COM1 serial port
// and then either halts forever or powers the VM off.
//
// Tests and benchmarks boot it under a real Firecracker; the CLI embeds it as
// the demo guest; the fake Firecracker parses it to emulate its console.
package guest
