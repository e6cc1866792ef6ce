package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

const templateLong = `A template is a snapshot of a sandbox that new sandboxes start from in
milliseconds, without booting: 'kindling run --template NAME'.

'template create' pauses the sandbox, copies its writable drives into the
template, snapshots it and resumes it. Each sandbox started from the
template (a clone) maps the template's guest memory copy-on-write, gets its
own copy of every writable drive, its own taps and vsock socket, and goes on
from where the template was taken. Clones need the Firecracker release the
template was made with (own taps need ≥ 1.12; a vsock socket of their own
any release, for templates made by this kindling).

Templates live in the state root, under .templates.`

const templateExample = `  kindling template create base --from web
  kindling run -d --template base --name worker1
  kindling template ls
  kindling template rm base`

func newTemplateCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "template",
		Short:   "Make sandboxes into templates that new sandboxes start from",
		Long:    templateLong,
		Example: templateExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd.CommandPath(), "missing subcommand (create, ls, inspect, verify or rm)")
			}
			return unknownCommand(cmd, args[0])
		},
	}
	cmd.AddCommand(
		newTemplateCreateCommand(a),
		newTemplateLsCommand(a),
		newTemplateInspectCommand(a),
		newTemplateVerifyCommand(a),
		newTemplateRmCommand(a),
	)
	return cmd
}

const templateCreateLong = `Make template NAME from the running (or paused) sandbox given by --from,
or build it from an image with --image.

--from ID: the sandbox is paused while its writable drives are copied into
the template and its snapshot is written (about 1 ms per MiB of guest
memory, plus the drives), then resumed; with --stop it is killed instead,
its state living on in the template. Read-only drives are not copied: they
must stay at their paths.

--image IMAGE: a builder sandbox boots its own copy of the image's root
filesystem with the guest agent as init, each --run COMMAND is run in it
in order once the agent answers (as '/bin/sh -c COMMAND', with the image's
environment, working directory and user), and the guest is snapshotted
into the template, which keeps the root filesystem as the commands left
it; the builder is then removed. The commands' output is shown on stderr
(-q hides it unless one fails). A command that fails ends the build with
its exit status, and nothing is kept. The machine flags (--kernel,
--cpus, --memory, ...) and --disk-size describe the builder, and so every
clone. Clones of such a template reach its agent on a vsock socket of
their own, on any Firecracker release.

Checksums of every file are written to the template's manifest.`

const templateCreateExample = `  kindling template create base --from web
  kindling template create base --from web --stop
  kindling template create py --image python:3.12-alpine --run 'pip install requests'
  kindling run --template py -- python -c 'import requests'`

// templateImageFlags are the machine flags of 'kindling run' that 'template
// create --image' takes, for its builder (and so its clones).
var templateImageFlags = []string{"kernel", "initrd", "kernel-args", "cpus", "memory", "smt", "net", "firecracker", "entropy", "cpu-template"}

func newTemplateCreateCommand(a *app) *cobra.Command {
	var (
		from     string
		stop     bool
		asJSON   bool
		img      string
		setup    []string
		diskSize string
		quiet    bool
		sf       specFlags
	)
	cmd := &cobra.Command{
		Use:     "create [flags] NAME (--from ID | --image IMAGE [--run COMMAND]...)",
		Short:   "Make a template from a running sandbox, or from an image",
		Long:    templateCreateLong,
		Example: templateCreateExample,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := cmd.CommandPath()
			if img != "" {
				var bad []string
				for _, f := range []string{"from", "stop"} {
					if cmd.Flags().Changed(f) {
						bad = append(bad, "--"+f)
					}
				}
				if len(bad) > 0 {
					return usageErrorf(path, "%s cannot go with --image: a template is made from a sandbox or from an image", strings.Join(bad, ", "))
				}
				return buildTemplate(cmd, a, &sf, args[0], img, templateBuildFlags{run: setup, diskSize: diskSize, quiet: quiet, asJSON: asJSON})
			}
			if from == "" {
				return usageErrorf(path, "missing --from ID or --image IMAGE: name the sandbox or the image to make the template from")
			}
			var bad []string
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if f.Name == "run" || f.Name == "disk-size" || f.Name == "quiet" || slices.Contains(templateImageFlags, f.Name) {
					bad = append(bad, "--"+f.Name)
				}
			})
			if len(bad) > 0 {
				sort.Strings(bad)
				verb := "goes"
				if len(bad) > 1 {
					verb = "go"
				}
				return usageErrorf(path, "%s %s with --image: a template made --from a sandbox keeps its machine and disks", strings.Join(bad, ", "), verb)
			}
			rt, id, err := a.localSandboxID(cmd.Context(), from)
			if err != nil {
				return err
			}
			progress, endProgress := a.hashProgress("hashing " + args[0])
			ts, err := template.Open(rt, append(a.templateOptions(), progress...)...)
			if err != nil {
				return err
			}
			// A sandbox started with 'run IMAGE' makes a template that
			// counts among the image's users.
			var img string
			if in, err := rt.Inspect(cmd.Context(), id); err == nil {
				img = in.Spec.Labels[labelImage]
			}
			tpl, err := ts.Create(cmd.Context(), args[0], id, template.Options{Stop: stop, Image: img})
			endProgress()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, templateView(tpl))
			}
			fmt.Fprintln(a.stdout, tpl.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the sandbox `ID` to make the template from")
	f.BoolVar(&stop, "stop", false, "with --from: kill the sandbox once the template is made, instead of resuming it")
	f.StringVar(&img, "image", "", "build the template from `IMAGE` (see 'kindling image ls')")
	f.StringArrayVar(&setup, "run", nil, "with --image: run `COMMAND` in the guest before the snapshot (repeatable, in order; /bin/sh -c)")
	f.StringVar(&diskSize, "disk-size", "", "with --image: grow the template's root filesystem to `SIZE` (as 2G)")
	f.BoolVarP(&quiet, "quiet", "q", false, "with --image: do not show the commands' output (unless one fails)")
	// The machine flags, for the builder: those of run, registered on a
	// set of their own and the ones that make sense here taken over.
	machine := pflag.NewFlagSet("machine", pflag.ContinueOnError)
	sf.register(machine)
	machine.Lookup("kernel").Usage = "guest kernel `PATH` (default $" + envKernel + ")"
	machine.Lookup("net").Usage = "network interface `auto` (repeatable): a tap created for the builder, and one for each clone"
	for _, name := range templateImageFlags {
		fl := machine.Lookup(name)
		fl.Usage = "with --image: " + fl.Usage
		f.AddFlag(fl)
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// templateBuildFlags are the flags of 'template create --image' besides
// the machine's.
type templateBuildFlags struct {
	run      []string
	diskSize string
	quiet    bool
	asJSON   bool
}

// buildTemplate is 'template create NAME --image IMAGE [--run CMD]...'.
func buildTemplate(cmd *cobra.Command, a *app, sf *specFlags, name, imageArg string, o templateBuildFlags) error {
	ctx := cmd.Context()
	for i, c := range o.run {
		if strings.TrimSpace(c) == "" {
			return usageErrorf(cmd.CommandPath(), "--run number %d is empty: give a command", i+1)
		}
	}
	is, err := a.images()
	if err != nil {
		return err
	}
	im, err := is.Resolve(ctx, imageArg)
	if err != nil {
		return imageHint(err)
	}
	rfs, err := agentRootfs(im)
	if err != nil {
		return err
	}
	grow, err := parseDiskSize(cmd, o.diskSize, im, rfs)
	if err != nil {
		return err
	}
	spec, err := imageSpec(cmd, sf, "a template from an image")
	if err != nil {
		return err
	}
	// Clones get taps of their own: a named tap (one host device) or a
	// CNI network cannot be given to every clone.
	if len(spec.CNINetworks) > 0 {
		return usageErrorf(cmd.CommandPath(), "--net cni:%s does not go with --image: a template's clones need interfaces of their own; give --net auto", spec.CNINetworks[0])
	}
	for _, n := range spec.Net {
		if !n.Auto {
			return usageErrorf(cmd.CommandPath(), "--net tap=%s does not go with --image: every clone would need that one tap; give --net auto", n.Tap)
		}
	}
	spec.Rootfs = &sandbox.Disk{Path: rfs.Path}
	// While it runs, the builder is one of the image's users.
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[labelImage] = im.ID
	if err := a.preflight(ctx, spec.Firecracker); err != nil {
		return err
	}
	ts, err := a.templates()
	if err != nil {
		return err
	}
	bo := template.BuildOptions{Spec: spec, DiskSize: grow, Run: o.run, Image: im.ID, ImageRef: imageName(im)}
	if !o.quiet {
		bo.Output = a.stderr
	}
	tpl, err := ts.Build(ctx, name, bo)
	var se *template.SetupError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return &exitStatusError{code: exitInterrupted, err: fmt.Errorf("create template %q: %w (nothing was kept)", name, errInterrupted)}
	case errors.As(err, &se):
		if !se.Shown && len(se.Output) > 0 {
			a.stderr.Write(se.Output)
			if se.Output[len(se.Output)-1] != '\n' {
				fmt.Fprintln(a.stderr)
			}
		}
		return &exitStatusError{code: se.ExitCode, err: fmt.Errorf("create template %q: --run %q exited with status %d: nothing was kept", name, se.Command, se.ExitCode)}
	default:
		return err
	}
	if o.asJSON {
		return writeJSON(a.stdout, templateView(tpl))
	}
	fmt.Fprintln(a.stdout, tpl.Name)
	return nil
}

const templateLsLong = `List the templates: NAME, FIRECRACKER (the release clones need), CPUS,
MEMORY, CLONES (sandboxes started from it and not removed), FROM (the
sandbox it was taken from, or the image it was built from) and CREATED.
-q prints only the names; --json prints each template's manifest, as
'kindling template inspect' does.`

const templateLsExample = `  kindling template ls
  kindling template ls --json`

func newTemplateLsCommand(a *app) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List templates",
		Long:    templateLsLong,
		Example: templateLsExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(cmd); err != nil {
				return err
			}
			ts, err := a.templates()
			if err != nil {
				return err
			}
			list, err := ts.List(cmd.Context())
			if err != nil {
				return err
			}
			list = templateViews(list) // --json prints [], not null
			name := func(t template.Template) string { return t.Name }
			return writeList(a.stdout, lf, list, name, func() error { return writeTemplateTable(a.stdout, list, time.Now()) })
		},
	}
	lf.register(cmd, "print only the names")
	return cmd
}

func writeTemplateTable(w io.Writer, list []template.Template, now time.Time) error {
	return writeTable(w, "NAME\tFIRECRACKER\tCPUS\tMEMORY\tCLONES\tFROM\tCREATED", func(tw io.Writer) {
		for _, t := range list {
			cpus, mem := machineSize(t.VCPUs, t.MemoryMiB)
			from := t.From
			if t.Image != "" {
				// Built from an image: its builder is gone; the image is
				// what it came from.
				from = cmp.Or(t.ImageRef, image.ShortID(t.Image))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", t.Name, t.Firecracker, cpus, mem, len(t.Clones), from, ago(now, t.CreatedAt))
		}
	})
}

const templateInspectLong = `Print templates' manifests as JSON: the Firecracker release and snapshot
format they need, machine configuration, drives (copied into the template,
or shared read-only), network interfaces, vsock, every file with its SHA-256
checksum, and the clones started from them.`

const templateInspectExample = `  kindling template inspect base
  kindling template inspect base | jq -r '.[0].clones[]'`

func newTemplateInspectCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "inspect NAME...",
		Short:   "Show templates in detail",
		Long:    templateInspectLong,
		Example: templateInspectExample,
		Args:    someArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := a.templates()
			if err != nil {
				return err
			}
			out := make([]template.Template, 0, len(args))
			for _, name := range args {
				t, err := ts.Inspect(cmd.Context(), name)
				if err != nil {
					return err
				}
				out = append(out, t)
			}
			return writeJSON(a.stdout, templateViews(out))
		},
	}
}

const templateVerifyLong = `Re-hash every file of templates and compare with the checksums of their
manifests. A clone checks only each file's size and modification time and
hashes the small microVM state file, so that it starts fast; verify (or
'kindling run --template NAME --verify-template') catches a file changed in
place behind its back.`

const templateVerifyExample = `  kindling template verify base`

func newTemplateVerifyCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "verify NAME...",
		Short:   "Check templates' files against their checksums",
		Long:    templateVerifyLong,
		Example: templateVerifyExample,
		Args:    someArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := a.runtime()
			if err != nil {
				return err
			}
			return eachID(args, func(name string) error {
				progress, endProgress := a.hashProgress("verifying " + name)
				ts, err := template.Open(rt, append(a.templateOptions(), progress...)...)
				if err != nil {
					return err
				}
				defer endProgress()
				return ts.Verify(cmd.Context(), name)
			})
		},
	}
}

const templateRmLong = `Remove templates. A template that clones (sandboxes started from it and
not removed) depend on is refused unless --force is given: running clones
then go on, but none of them can be started again once stopped.`

const templateRmExample = `  kindling template rm base
  kindling template rm --force base`

func newTemplateRmCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove templates",
		Long:    templateRmLong,
		Example: templateRmExample,
		Args:    someArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := a.templates()
			if err != nil {
				return err
			}
			return eachID(args, func(name string) error {
				if err := ts.Remove(cmd.Context(), name, force); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove it even while clones depend on it")
	return cmd
}

// templateRunFlags are the flags of 'kindling run' that go with --template;
// the others describe a machine, which the template fixes.
var templateRunFlags = map[string]bool{
	"template": true, "verify-template": true, "name": true, "net": true, "firecracker": true, "label": true,
	"rm": true, "detach": true, "json": true, "format": true, "timeout": true, "root": true, "debug": true,
}

// addTemplateRunFlags adds --template and --verify-template to 'kindling run'.
func addTemplateRunFlags(fs *pflag.FlagSet, name *string, verify *bool) {
	fs.StringVar(name, "template", "", "start from template `NAME` instead of booting (see 'kindling template')")
	fs.BoolVar(verify, "verify-template", false, "with --template: re-hash the template's files first")
}

// startFromTemplate starts a clone of template name for 'kindling run
// --template', within timeout (0: no limit). Flags that describe the
// machine are refused: the template fixes it.
func startFromTemplate(ctx context.Context, a *app, cmd *cobra.Command, rt *sandbox.Runtime, name string, o template.CloneOptions, timeout time.Duration) (sandbox.Info, error) {
	var bad []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if !templateRunFlags[f.Name] {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		sort.Strings(bad)
		return sandbox.Info{}, usageErrorf(cmd.CommandPath(), "%s cannot go with --template: the template fixes the machine", strings.Join(bad, ", "))
	}
	sctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var progress []template.Option
	endProgress := func() {}
	if o.Verify {
		progress, endProgress = a.hashProgress("verifying " + name)
	}
	ts, err := template.Open(rt, append(a.templateOptions(), progress...)...)
	if err != nil {
		return sandbox.Info{}, err
	}
	info, err := ts.Run(sctx, name, o)
	endProgress()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return info, &exitStatusError{code: exitInterrupted, err: fmt.Errorf("start from template %q: %w", name, errInterrupted)}
		case sctx.Err() != nil:
			return info, fmt.Errorf("start from template %q: not running after %v: give a longer --timeout: %w", name, timeout, err)
		}
		return info, err
	}
	return info, nil
}
