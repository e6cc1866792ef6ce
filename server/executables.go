package server

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/sandbox"
)

// checkNamedExecutables refuses a request that names programs for the
// server to run: a firecracker or jailer executable other than the one
// kindlingd was configured with, or CNI plugin directories other than its
// own. Over the API a path is a client's word, and kindlingd (usually
// root) must never run a program on it — the rule the runtime keeps for
// files on disk (security.md, D1/D2), kept here for requests.
func checkNamedExecutables(fc, jailer string, cniBinDirs []string) error {
	for _, e := range []struct {
		kind       install.Kind
		name, path string
	}{{install.Firecracker, "firecracker", fc}, {install.Jailer, "jailer", jailer}} {
		if e.path == "" {
			continue
		}
		if def, err := install.Find(e.kind, ""); err == nil && def == e.path {
			continue
		}
		return fmt.Errorf("%s %s: kindlingd runs only the %s it was configured with; leave %s out of the request: %w",
			e.name, e.path, e.name, e.name, sandbox.ErrInvalid)
	}
	if len(cniBinDirs) > 0 && !slices.Equal(cniBinDirs, serverCNIBinDirs()) {
		return fmt.Errorf("CNI plugin directories %v: kindlingd runs only the CNI plugins of its own configuration ($%s); leave cni_bin_dirs out of the request: %w",
			cniBinDirs, sandbox.EnvCNIPath, sandbox.ErrInvalid)
	}
	return nil
}

// serverCNIBinDirs are the CNI plugin directories the runtime uses when a
// spec names none.
func serverCNIBinDirs() []string {
	if env := os.Getenv(sandbox.EnvCNIPath); env != "" {
		return filepath.SplitList(env)
	}
	return sandbox.DefaultCNIBinDirs
}
