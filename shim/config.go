package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

// ConfigFromEnv reads the Config from the environment. Without
// KINDLING_AGENT the agent is kindling-agent next to the shim's binary.
func ConfigFromEnv() Config {
	c := Config{Root: os.Getenv(EnvRoot), Kernel: os.Getenv(EnvKernel), Agent: os.Getenv(EnvAgent), Firecracker: os.Getenv(EnvFirecracker)}
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

// Validate checks that the files the config names are there.
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
	return nil
}
