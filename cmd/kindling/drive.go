package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/vmm"
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
			rt, id, err := a.hotplugID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			slot, err := rt.AttachDrive(cmd.Context(), id, d)
			if err != nil {
				return slotAccessError(id, args[1], err)
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
			rt, id, err := a.hotplugID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := rt.DetachDrive(cmd.Context(), id, args[1]); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, args[1])
			return nil
		},
	}
}

// slotAccessError rewrites the driver's error for a drive whose access
// (read-only or read-write) no free slot has, whose fix speaks to Go
// callers, into the command line's fix; other errors pass unchanged.
func slotAccessError(id, arg string, err error) error {
	var ce *vmm.ConfigError
	if !errors.As(err, &ce) || ce.Field != "drive.read_only" {
		return err
	}
	fix := fmt.Sprintf("give %s:ro, or create the sandbox with --hotplug-writable", strings.TrimSuffix(arg, ":rw"))
	if strings.Contains(ce.Problem, "are writable") {
		fix = fmt.Sprintf("give %s without :ro: the sandbox was created with --hotplug-writable", strings.TrimSuffix(arg, ":ro"))
	}
	return &rewordedError{msg: fmt.Sprintf("drive add %s: sandbox %q: %s: %s", arg, id, ce.Problem, fix), err: err}
}

// rewordedError says err in the command line's words; it still matches
// what err matches.
type rewordedError struct {
	msg string
	err error
}

func (r *rewordedError) Error() string { return r.msg }

func (r *rewordedError) Unwrap() error { return r.err }
