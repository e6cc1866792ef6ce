package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox/remote"
)

const poolLong = `A warm pool keeps clones of a template started and paused on a kindlingd
server, so that a run of the template there ('kindling --host ADDR run
--template NAME', or an E2B create) only resumes one: milliseconds instead
of a snapshot load. The server refills the pool in the background, within
the pool's memory budget and the server's (--pool-memory).

Pools are the server's: every pool command needs --host (or $KINDLING_HOST).
The server keeps them across restarts.`

const poolExample = `  kindling --host unix:///run/kindlingd.sock pool set base 4
  kindling --host unix:///run/kindlingd.sock pool set base 8 --memory 1G
  kindling --host unix:///run/kindlingd.sock pool ls
  kindling --host unix:///run/kindlingd.sock pool rm base`

func newPoolCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "pool",
		Short:   "Keep warm pools of a server's templates",
		Long:    poolLong,
		Example: poolExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd.CommandPath(), "missing subcommand (ls, set or rm)")
			}
			return unknownCommand(cmd, args[0])
		},
	}
	cmd.AddCommand(newPoolLsCommand(a), newPoolSetCommand(a), newPoolRmCommand(a))
	return cmd
}

// poolClient is the client of the server --host names.
func (a *app) poolClient() (*remote.Client, error) {
	if a.host == "" {
		return nil, fmt.Errorf("warm pools are kept by a kindlingd server: give --host ADDR (or $%s)", remote.EnvHost)
	}
	c, err := a.controller()
	if err != nil {
		return nil, err
	}
	return c.(*remote.Client), nil
}

const poolLsLong = `List the server's warm pools: TEMPLATE, READY (paused clones ready) of
SIZE, MEMORY (their guest memory, of the pool's budget when it has one),
HITS and MISSES (runs that found a ready clone, and that found none, since
the server started) and the last ERROR filling it. -q prints only the
template names; --json prints the pools as an array.`

func newPoolLsCommand(a *app) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List a server's warm pools",
		Long:    poolLsLong,
		Example: "  kindling --host unix:///run/kindlingd.sock pool ls\n  kindling pool ls --json   # with $KINDLING_HOST set",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(cmd); err != nil {
				return err
			}
			c, err := a.poolClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ps, err := c.ListPools(cmd.Context())
			if err != nil {
				return err
			}
			key := func(p remote.Pool) string { return p.Template }
			return writeList(a.stdout, lf, ps.Pools, key, func() error { return writePoolTable(a.stdout, ps) })
		},
	}
	lf.register(cmd, "print only the template names")
	return cmd
}

func writePoolTable(w io.Writer, ps remote.Pools) error {
	return writeTable(w, "TEMPLATE\tREADY\tSIZE\tMEMORY\tHITS\tMISSES\tERROR", func(tw io.Writer) {
		for _, p := range ps.Pools {
			mem := mib(p.MemoryUsedMiB)
			if p.MemoryMiB > 0 {
				mem += " of " + mib(p.MemoryMiB)
			}
			errs := p.Error
			if errs == "" {
				errs = "-"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\t%s\n", p.Template, p.Ready, p.Size, mem, p.Hits, p.Misses, errs)
		}
	})
}

const poolSetLong = `Give template NAME a warm pool of SIZE ready clones on the server, or
change its size. A smaller size removes the ready clones beyond it at
once; 0 keeps the pool (and its counters) with no clone ready.
--memory bounds the guest memory of the pool's ready clones (e.g. 1G; 0,
the default, for no bound of its own: the server's --pool-memory still
applies). It prints the template's name.`

func newPoolSetCommand(a *app) *cobra.Command {
	var mem memoryValue
	cmd := &cobra.Command{
		Use:   "set [flags] NAME SIZE",
		Short: "Give a template a warm pool, or resize it",
		Long:  poolSetLong,
		Example: "  kindling --host unix:///run/kindlingd.sock pool set base 4\n" +
			"  kindling --host unix:///run/kindlingd.sock pool set base 16 --memory 2G\n" +
			"  kindling --host unix:///run/kindlingd.sock pool set base 0   # keep the pool, no clone ready",
		Args: exactArgs("NAME", "SIZE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := strconv.Atoi(args[1])
			if err != nil || size < 0 {
				return usageErrorf(cmd.CommandPath(), "SIZE %q: give a number of clones, 0 or more", args[1])
			}
			c, err := a.poolClient()
			if err != nil {
				return err
			}
			defer c.Close()
			p, err := c.SetPool(cmd.Context(), args[0], size, mem.mib)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, p.Template)
			return nil
		},
	}
	cmd.Flags().Var(&mem, "memory", "bound the guest memory of the pool's ready clones to `SIZE` (e.g. 1G)")
	return cmd
}

func newPoolRmCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "End templates' warm pools, removing their ready clones",
		Long: `End the warm pools of the templates named on the server: their ready
clones are removed (claimed ones are ordinary sandboxes and stay) and the
server forgets the pools. It prints each template's name.`,
		Example: "  kindling --host unix:///run/kindlingd.sock pool rm base",
		Args:    someArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.poolClient()
			if err != nil {
				return err
			}
			defer c.Close()
			return eachID(args, func(name string) error {
				if err := c.DeletePool(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, name)
				return nil
			})
		},
	}
	return cmd
}
