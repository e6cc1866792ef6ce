package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const driveLong = `Hot-plug drives into a running sandbox, and take them out again.

A sandbox can take drives while it runs only into the empty slots it was
created with (--hotplug-slots N on run or create). The slots take read-only
drives, or read-write ones when the sandbox was created with
--hotplug-writable. 'kindling inspect' lists the slots and what they hold.`

const driveAddLong = `Put the host file PATH into a free hotplug slot of a running sandbox, and
print the slot's ID. The drive is read-write unless PATH ends in :ro; a
read-write drive needs a sandbox created with --hotplug-writable.`

const driveRmLong = `Take the drive out of a hotplug slot of a running sandbox; the slot is free
again afterwards.`

func newDriveCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drive",
		Short: "Hot-plug drives into a running sandbox",
		Long:  driveLong,
		Example: `  kindling run -d --name web --kernel vmlinux --hotplug-slots 2
  kindling drive add web data.img:ro
  kindling drive rm web pool0`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd.CommandPath(), "missing subcommand (add or rm)")
			}
			return unknownCommand(cmd, args[0])
		},
	}
	cmd.AddCommand(newDriveAddCommand(a), newDriveRmCommand(a))
	return cmd
}

func newDriveAddCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "add [flags] ID PATH[:ro|:rw]",
		Short:   "Hot-plug a drive into a free slot and print the slot",
		Long:    driveAddLong,
		Example: "  kindling drive add web data.img\n  kindling drive add --json web /srv/ref.img:ro",
		Args:    exactArgs("ID", "PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := sandbox.ParseDisk(args[1])
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			rt, err := a.hotplugger()
			if err != nil {
				return err
			}
			slot, err := rt.AttachDrive(cmd.Context(), args[0], d)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, struct {
					Slot string `json:"slot"`
				}{slot})
			}
			fmt.Fprintln(a.stdout, slot)
			return nil
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func newDriveRmCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID SLOT",
		Aliases: []string{"remove"},
		Short:   "Take a hot-plugged drive out of its slot",
		Long:    driveRmLong,
		Example: "  kindling drive rm web pool0",
		Args:    exactArgs("ID", "SLOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.hotplugger()
			if err != nil {
				return err
			}
			return rt.DetachDrive(cmd.Context(), args[0], args[1])
		},
	}
}
