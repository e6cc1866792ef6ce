package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

const egressLong = `Change the egress policy of a sandbox with a slot or CNI network. A running
sandbox gets the new policy at once, in one step (established connections
go on); the sandbox's spec keeps it for its next start. Prints the policy
in force as JSON.

--allow adds rules (CIDR, address, or domain with its subdomains; domains
need --net slot, whose DNS forwarder learns their addresses), --revoke
removes rules as they were given, --clear drops every rule first, and
--default switches between deny and allow. A bad rule changes nothing.`

const egressExample = `  kindling egress web --allow 10.1.0.0/16 --allow pypi.org
  kindling egress web --revoke pypi.org
  kindling egress web --default allow`

func newEgressCommand(a *app) *cobra.Command {
	var ch sandbox.EgressChange
	cmd := &cobra.Command{
		Use:     "egress ID",
		Short:   "Change a sandbox's egress policy",
		Long:    egressLong,
		Example: egressExample,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ch.Default == "" && len(ch.Allow) == 0 && len(ch.Revoke) == 0 && !ch.Clear {
				return usageErrorf(cmd.CommandPath(), "nothing to change: give --allow, --revoke, --clear or --default")
			}
			rt, id, err := a.sandboxID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			es, ok := rt.(sandbox.EgressSetter)
			if !ok {
				return fmt.Errorf("egress of sandbox %q: this runtime cannot change egress policies: run kindling on the sandbox's host without --host", id)
			}
			in, err := es.SetEgress(cmd.Context(), id, ch)
			if err != nil {
				return err
			}
			// An empty rule list prints as [], not null.
			allow := append([]string{}, in.Spec.AllowEgress...)
			return writeJSON(a.stdout, egressView{ID: in.ID, Default: in.Spec.Egress, Allow: allow})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ch.Default, "default", "", "the policy's default `POLICY`: deny or allow")
	fs.StringArrayVar(&ch.Allow, "allow", nil, "add a rule `CIDR|ADDRESS|DOMAIN` (repeatable)")
	fs.StringArrayVar(&ch.Revoke, "revoke", nil, "remove a rule `RULE` as it was given (repeatable)")
	fs.BoolVar(&ch.Clear, "clear", false, "remove every rule before adding --allow's")
	return cmd
}

// egressView is what 'kindling egress' prints.
type egressView struct {
	ID      string   `json:"id"`
	Default string   `json:"default"`
	Allow   []string `json:"allow"`
}
