package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kindling-vm/kindling/internal/install"
)

// Environment variables the shim reads (containerd passes its own
// environment to the shims it starts).
const (
	// EnvRoot is kindling's state root for the shim's sandboxes.
	EnvRoot = "KINDLING_SHIM_ROOT"
	// EnvKernel is the guest kernel.
	EnvKernel = "KINDLING_KERNEL"
	// EnvAgent is the kindling-agent binary put into the guest's root.
	EnvAgent = "KINDLING_AGENT"
	// EnvFirecracker is the firecracker binary (package sandbox reads it).
	EnvFirecracker = "KINDLING_FIRECRACKER"
	// EnvJailer is Firecracker's jailer, which runs each VM chrooted as a
	// uid of its own.
	EnvJailer = "KINDLING_JAILER"
	// EnvNoJailer, set to 1, runs the VMs without the jailer: Firecracker
	// runs as root, as the shim does.
	EnvNoJailer = "KINDLING_NO_JAILER"
)

// DefaultRoot is the state root when EnvRoot is unset.
const DefaultRoot = "/run/kindling/containerd"

// Config is where the shim finds what a VM needs.
type Config struct {
	// Root is the state root of the shim's kindling runtime.
	Root string
	// Kernel is the guest kernel.
	Kernel string
	// Agent is the guest agent binary.
	Agent string
	// Firecracker is the VMM binary; empty lets package sandbox find it
	// (KINDLING_FIRECRACKER, else PATH).
	Firecracker string
	// Jailer is the jailer binary that runs each VM's Firecracker; as
	// root, empty means the one on PATH or installed by kindling, and
	// Validate refuses when there is none and NoJailer is false.
	Jailer string
	// NoJailer runs Firecracker without the jailer, even as root.
	NoJailer bool
}

// ConfigFromEnv reads the Config from the environment. Without
// KINDLING_AGENT the agent is kindling-agent next to the shim's binary.
func ConfigFromEnv() Config {
	c := Config{Root: os.Getenv(EnvRoot), Kernel: os.Getenv(EnvKernel), Agent: os.Getenv(EnvAgent), Firecracker: os.Getenv(EnvFirecracker),
		Jailer: os.Getenv(EnvJailer)}
	c.NoJailer, _ = strconv.ParseBool(os.Getenv(EnvNoJailer))
	if c.Root == "" {
		c.Root = DefaultRoot
	}
	if c.Agent == "" {
		if self, err := os.Executable(); err == nil {
			c.Agent = filepath.Join(filepath.Dir(self), "kindling-agent")
		}
	}
	return c
}

// Validate checks that the files the config names are there, and that
// the VMs have a jailer or are told to run without one (see JailerPath).
func (c Config) Validate() error {
	if c.Root == "" || !filepath.IsAbs(c.Root) {
		return fmt.Errorf("shim state root %q: want an absolute path (set %s)", c.Root, EnvRoot)
	}
	if c.Kernel == "" {
		return errors.New("no guest kernel: set " + EnvKernel + " in containerd's environment")
	}
	for _, f := range []struct{ what, path, env string }{{"guest kernel", c.Kernel, EnvKernel}, {"guest agent", c.Agent, EnvAgent}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("%s %s: %w (set %s)", f.what, f.path, err, f.env)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s %s: not a regular file (set %s)", f.what, f.path, f.env)
		}
	}
	_, err := c.JailerPath()
	return err
}

// JailerPath returns the jailer the VMs run under, "" for none. As root
// the jailer is the default (c.Jailer, else one on PATH or installed by
// kindling), and a shim with neither a jailer nor NoJailer refuses: a
// quiet fallback would run Firecracker as root where the node's owner
// meant to jail it.
func (c Config) JailerPath() (string, error) {
	switch {
	case c.NoJailer && c.Jailer != "":
		return "", fmt.Errorf("both %s=%s and %s are set: leave out one of them", EnvJailer, c.Jailer, EnvNoJailer)
	case c.NoJailer:
		return "", nil
	case c.Jailer != "":
		fi, err := os.Stat(c.Jailer)
		if err != nil {
			return "", fmt.Errorf("jailer %s: %w (set %s)", c.Jailer, err, EnvJailer)
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("jailer %s: not a regular file (set %s)", c.Jailer, EnvJailer)
		}
		return filepath.Abs(c.Jailer)
	case os.Geteuid() != 0:
		return "", nil // not root: Firecracker runs as the shim's user
	}
	p, err := install.Find(install.Jailer, "")
	if err != nil {
		return "", fmt.Errorf("no jailer found: as root, the shim runs each VM under Firecracker's jailer: set %s=PATH to the jailer, or %s=1 to run VMs without it (Firecracker then runs as root), in containerd's environment", EnvJailer, EnvNoJailer)
	}
	return p, nil
}
