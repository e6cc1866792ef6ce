package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kindling-vm/kindling/sandbox"
)

// jailLeaks finds what jailed sandboxes of the run left (issue 17, D4): a
// chroot, a cgroup (and any process still in it: a jailed VMM's command
// line and working directory are its jail's, so processLeaks cannot see
// it), or a jail uid still allocated.
func (c leakCheck) jailLeaks() []string {
	var leaks []string
	for _, l := range sandbox.JailLeftoversOfRoot(c.root) {
		leaks = append(leaks, "jail: "+l)
		dir, ok := strings.CutPrefix(l, "cgroup ")
		if !ok {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, pid := range strings.Fields(string(b)) {
			leaks = append(leaks, fmt.Sprintf("jail: jailed process %s still running in %s", pid, dir))
		}
	}
	return leaks
}
