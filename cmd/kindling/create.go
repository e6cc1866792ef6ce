package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const createLong = `Create a sandbox without starting it, and print its ID.

Nothing is spawned: the spec is checked (kernel and drive files exist,
the vCPU count and memory are in range, names and MACs are valid) and
recorded under the state root. Start it with 'kindling start ID'.

Settings come from flags, or from a TOML file given with --config whose
keys are the flag names (name, kernel, initrd, kernel_args, rootfs, drives,
cpus, memory, smt, net, netns, vsock, hotplug_slots, hotplug_writable,
firecracker, jailer, wait_console); relative paths in it are relative to the file. Flags given on
the command line override the file.`

const createExample = `  kindling create --name web --kernel vmlinux --rootfs rootfs.ext4:ro --cpus 2 --memory 1G
  kindling create --config web.toml --memory 256
  kindling create --json --net auto`

func newCreateCommand(a *app) *cobra.Command {
	var (
		sf     specFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:     "create [flags]",
		Short:   "Create a sandbox (without starting it) and print its ID",
		Long:    createLong,
		Example: createExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := sf.spec(cmd)
			if err != nil {
				return err
			}
			rt, err := a.controller()
			if err != nil {
				return err
			}
			info, err := rt.Create(cmd.Context(), spec, sandbox.CreateOptions{})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, sandboxView(info))
			}
			fmt.Fprintln(a.stdout, info.ID)
			return nil
		},
	}
	sf.register(cmd.Flags())
	addJSONFlag(cmd, &asJSON)
	return cmd
}
