package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/sandbox"
)

// argKind is what a command's positional arguments name, for shell
// completion.
type argKind int

const (
	sandboxArgs    argKind = iota // every argument is a sandbox ID
	sandboxFirst                  // the first argument is a sandbox ID
	sandboxThenDir                // a sandbox ID, then a directory
	templateArgs                  // every argument is a template name
	dirArg                        // one directory
)

// completedArgs maps command paths to what their arguments name.
var completedArgs = map[string]argKind{
	"kindling start":            sandboxFirst,
	"kindling stop":             sandboxArgs,
	"kindling kill":             sandboxArgs,
	"kindling rm":               sandboxArgs,
	"kindling inspect":          sandboxArgs,
	"kindling pause":            sandboxFirst,
	"kindling resume":           sandboxFirst,
	"kindling logs":             sandboxFirst,
	"kindling threads":          sandboxFirst,
	"kindling drive add":        sandboxFirst,
	"kindling drive rm":         sandboxFirst,
	"kindling snapshot":         sandboxThenDir,
	"kindling restore":          dirArg,
	"kindling template inspect": templateArgs,
	"kindling template verify":  templateArgs,
	"kindling template rm":      templateArgs,
}

// addCompletions gives the commands of root shell completion of sandbox IDs
// and template names (with their status or source as the description),
// and the flags that name them (run --template, template create --from).
// Shells ask through cobra's hidden __complete command; 'kindling
// completion bash|zsh|fish' prints the script that does.
func addCompletions(a *app, root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if kind, ok := completedArgs[c.CommandPath()]; ok && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = a.completeArgs(kind)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	flags := []struct {
		path, flag string
		fn         cobra.CompletionFunc
	}{
		{"kindling run", "template", a.completeTemplates},
		{"kindling template create", "from", a.completeSandboxes},
	}
	for _, f := range flags {
		if c, _, err := root.Find(strings.Fields(f.path)[1:]); err == nil && c.Flags().Lookup(f.flag) != nil {
			_ = c.RegisterFlagCompletionFunc(f.flag, f.fn) // fails only if registered twice
		}
	}
}

// completeArgs completes the next positional argument of a command whose
// arguments are of kind.
func (a *app) completeArgs(kind argKind) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case kind == dirArg && len(args) == 0, kind == sandboxThenDir && len(args) == 1:
			return nil, cobra.ShellCompDirectiveFilterDirs
		case kind == sandboxFirst && len(args) > 0:
			return nil, cobra.ShellCompDirectiveDefault // a path, a slot: the shell's own
		case kind == sandboxThenDir && len(args) > 1, kind == dirArg:
			return nil, cobra.ShellCompDirectiveNoFileComp
		case kind == templateArgs:
			names, dir := a.completeTemplates(cmd, args, toComplete)
			return without(names, args), dir
		}
		ids, dir := a.completeSandboxes(cmd, args, toComplete)
		return without(ids, args), dir
	}
}

// completeSandboxes lists the sandboxes under the state root whose IDs
// start with toComplete, each described by its status.
func (a *app) completeSandboxes(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	rt, err := a.runtime()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	infos, err := rt.List(cmd.Context(), sandbox.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, in := range infos {
		if strings.HasPrefix(in.ID, toComplete) {
			out = append(out, cobra.CompletionWithDesc(in.ID, string(in.Status)))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeTemplates lists the templates whose names start with toComplete,
// each described by the sandbox it was made from.
func (a *app) completeTemplates(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	st, err := a.templates()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ts, err := st.List(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, t := range ts {
		if strings.HasPrefix(t.Name, toComplete) {
			out = append(out, cobra.CompletionWithDesc(t.Name, "from "+t.From))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// without drops the completions already given as arguments.
func without(cs []cobra.Completion, given []string) []cobra.Completion {
	return slices.DeleteFunc(cs, func(c cobra.Completion) bool {
		name, _, _ := strings.Cut(c, "\t")
		return slices.Contains(given, name)
	})
}
