package vmm

import "strings"

// DefaultKernelArgs is the kernel command line a microVM boots with before
// Config.KernelArgs is merged over it.
//
// It is the seed's Firecracker command line with one change: the seed passed
// 8250.nr_uarts=0, which removes the serial ports and so silences the guest's
// console. kindling captures the serial console (Firecracker copies COM1 to
// its standard output), so it keeps the port and sends the console to it with
// console=ttyS0 instead.
//
//   - console=ttyS0: the kernel console on COM1, which kindling captures.
//   - reboot=k: reboot through the keyboard controller, which Firecracker
//     turns into its own exit.
//   - panic=1: reboot (and so end the VMM) one second after a panic.
//   - pci=off, acpi=off, iommu=off: the guest has no PCI bus, no ACPI
//     tables it needs and no IOMMU; skip probing them.
//   - net.ifnames=0: keep the eth0, eth1 … names.
//   - random.trust_cpu=on: seed the entropy pool from RDRAND at boot.
//
// The root device is not here: a Root drive adds it (see Config.BootArgs).
const DefaultKernelArgs = "console=ttyS0 reboot=k panic=1 pci=off iommu=off net.ifnames=0 random.trust_cpu=on acpi=off"

// BootArgs returns the kernel command line c boots with: DefaultKernelArgs,
// the root device of the Root drive if there is one, and c.KernelArgs
// merged over them (MergeKernelArgs). The root device is root=/dev/vda, or
// root=PARTUUID=<uuid> when the drive names a partition, with ro or rw after
// the drive's ReadOnly flag; a root= or ro/rw in KernelArgs wins. The Root
// drive is /dev/vda only if it is attached first, which Machine does.
func (c *Config) BootArgs() string {
	defaults := DefaultKernelArgs
	for _, d := range c.Drives {
		if !d.Root {
			continue
		}
		root := " root=/dev/vda"
		if d.PartUUID != "" {
			root = " root=PARTUUID=" + d.PartUUID
		}
		mode := " rw"
		if d.ReadOnly {
			mode = " ro"
		}
		defaults += root + mode
		break
	}
	return MergeKernelArgs(defaults, c.KernelArgs)
}

// MergeKernelArgs merges the kernel command line user over defaults and
// returns the result.
//
// Both are split into parameters as the kernel splits them: at white space,
// except inside double quotes, so a value may hold spaces (init="/bin/sh -c
// x"). A parameter is key=value or a bare flag; its key is the text before
// the first '=', with '-' and '_' alike as the kernel takes them, and ro and
// rw count as one key. Everything after a lone "--" is arguments for init,
// not parameters.
//
// For every key user gives, user's parameters replace all of defaults'; a
// key given more than once in one line (console=ttyS0 console=tty0) keeps
// all its values. The result is deterministic: defaults' parameters in their
// order, a replaced key taking the place of its first occurrence, then
// user's new keys in the order they first appear, then "--" and the init
// arguments of defaults followed by those of user. An unbalanced quote is
// closed at the end of its parameter. Merging the result again with an empty
// user line returns it unchanged.
func MergeKernelArgs(defaults, user string) string {
	dParams, dInit, dSep := splitKernelArgs(defaults)
	uParams, uInit, uSep := splitKernelArgs(user)

	byKey := map[string][]string{} // user's parameters by key
	var order []string             // user's keys, first appearance first
	for _, p := range uParams {
		k := paramKey(p)
		if _, seen := byKey[k]; !seen {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], p)
	}

	out := make([]string, 0, len(dParams)+len(uParams)+1+len(dInit)+len(uInit))
	done := map[string]bool{} // user keys already written
	for _, p := range dParams {
		k := paramKey(p)
		ps, replaced := byKey[k]
		switch {
		case !replaced:
			out = append(out, p)
		case !done[k]:
			out = append(out, ps...)
			done[k] = true
		}
	}
	for _, k := range order {
		if !done[k] {
			out = append(out, byKey[k]...)
		}
	}
	if dSep || uSep {
		out = append(out, "--")
		out = append(out, dInit...)
		out = append(out, uInit...)
	}
	return strings.Join(out, " ")
}

// splitKernelArgs splits a command line into its parameters and the init
// arguments after "--" (sep reports whether there was one). Every returned
// word has balanced double quotes.
func splitKernelArgs(s string) (params, init []string, sep bool) {
	for _, w := range kernelWords(s) {
		switch {
		case sep:
			init = append(init, w)
		case w == "--":
			sep = true
		default:
			params = append(params, w)
		}
	}
	return params, init, sep
}

// kernelWords splits s at white space outside double quotes, closing an
// unbalanced quote at the end of its word.
func kernelWords(s string) []string {
	var words []string
	var b strings.Builder
	inQuote, inWord := false, false
	flush := func() {
		if inQuote {
			b.WriteByte('"')
			inQuote = false
		}
		words = append(words, b.String())
		b.Reset()
		inWord = false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if isKernelSpace(ch) && !inQuote {
			if inWord {
				flush()
			}
			continue
		}
		if ch == '"' {
			inQuote = !inQuote
		}
		b.WriteByte(ch)
		inWord = true
	}
	if inWord {
		flush()
	}
	return words
}

// isKernelSpace reports whether ch is white space to the kernel's parser.
func isKernelSpace(ch byte) bool {
	switch ch {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// paramKey returns the key a parameter is merged by.
func paramKey(p string) string {
	k, _, _ := strings.Cut(p, "=")
	k = strings.ReplaceAll(k, `"`, "")
	k = strings.ReplaceAll(k, "-", "_")
	if k == "ro" || k == "rw" {
		if !strings.Contains(p, "=") {
			return "ro|rw" // mutually exclusive flags: one key
		}
	}
	return k
}
