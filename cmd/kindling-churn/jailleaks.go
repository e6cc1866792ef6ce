package main

import "github.com/kindling-vm/kindling/sandbox"

// jailLeaks finds what jailed sandboxes of the run left (issue 17, D4): a
// chroot, a cgroup, or a jail uid still allocated.
func (c leakCheck) jailLeaks() []string {
	var leaks []string
	for _, l := range sandbox.JailLeftoversOfRoot(c.root) {
		leaks = append(leaks, "jail: "+l)
	}
	return leaks
}
