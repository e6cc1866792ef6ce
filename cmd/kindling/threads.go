package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

const threadsLong = `Print the host thread IDs of a running sandbox's vCPUs, in vCPU order, for
pinning (taskset -p), scheduling or tracing them.`

const threadsExample = `  kindling threads web
  kindling threads --json web`

// vcpuThread is one line of 'kindling threads --json'.
type vcpuThread struct {
	VCPU int `json:"vcpu"`
	TID  int `json:"tid"`
}

func newThreadsCommand(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "threads [flags] ID",
		Short:   "Print the host thread IDs of a sandbox's vCPUs",
		Long:    threadsLong,
		Example: threadsExample,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, id, err := a.localSandboxID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			tids, err := rt.Threads(cmd.Context(), id)
			if err != nil {
				return err
			}
			threads := make([]vcpuThread, len(tids))
			for i, tid := range tids {
				threads[i] = vcpuThread{VCPU: i, TID: tid}
			}
			if asJSON {
				return writeJSON(a.stdout, threads)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "VCPU\tTID")
			for _, t := range threads {
				fmt.Fprintf(tw, "%d\t%d\n", t.VCPU, t.TID)
			}
			if err := tw.Flush(); err != nil {
				return fmt.Errorf("write table: %w", err)
			}
			return nil
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}
