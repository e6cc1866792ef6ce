package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox/remote"
)

// envAgent names the guest agent binary injected into images when --agent
// is not given.
const envAgent = "KINDLING_AGENT"

// imagesDir is the image store's directory in the state root.
const imagesDir = image.StateRootDir

// images opens the image store of the state root.
func (a *app) images() (*image.Store, error) {
	root := a.root
	if root == "" {
		root = store.DefaultRoot()
	}
	s, err := image.Open(filepath.Join(root, imagesDir))
	if err != nil {
		return nil, fmt.Errorf("open image store in %s: %w: give a writable --root DIR or set %s", root, err, store.EnvRoot)
	}
	return s, nil
}

const imageLong = `Images are OCI container images made into root filesystems for sandboxes.

'image import' reads a 'docker save' tarball, an OCI image layout
directory or an OCI archive; 'image pull' fetches from a registry, with the
credentials of your docker config ($DOCKER_CONFIG, else ~/.docker). Either
way the layers are flattened into an ext4 file that is the same, byte for
byte, for the same image and agent, stored by digest in the state root
under .images, and built once: importing or pulling an image the store has
costs nothing.

The guest agent (--agent or $KINDLING_AGENT) is injected as the guest's
init at /.kindling/kindling-agent; without one the image is stored without
it, and cannot be run until imported again with one. Only linux/amd64
images are accepted. Building needs root (owners, device nodes) and
e2fsprogs.`

const imageExample = `  kindling image pull alpine:3.20 --agent ./kindling-agent
  docker save myapp:1 -o myapp.tar && kindling image import myapp.tar
  kindling image ls
  kindling image inspect alpine:3.20
  kindling image rm alpine:3.20`

func newImageCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Short:   "Import, pull, list and remove images",
		Long:    imageLong,
		Example: imageExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd.CommandPath(), "missing subcommand (import, pull, ls, inspect or rm)")
			}
			return unknownCommand(cmd, args[0])
		},
	}
	cmd.AddCommand(
		newImageImportCommand(a),
		newImagePullCommand(a),
		newImageLsCommand(a),
		newImageInspectCommand(a),
		newImageRmCommand(a),
	)
	return cmd
}

// addFlags are the flags import and pull share.
type addFlags struct {
	agent  string
	quiet  bool
	asJSON bool
}

func (f *addFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.agent, "agent", "", "the guest agent `PATH` to inject (default $"+envAgent+"; none: build without it)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "no progress display")
	fs.BoolVar(&f.asJSON, "json", false, "print progress events and the image as JSON lines")
}

func (f *addFlags) check(cmd *cobra.Command) error {
	if f.quiet && f.asJSON {
		return usageErrorf(cmd.CommandPath(), "-q and --json do not go together: pick one")
	}
	if f.agent == "" {
		f.agent = os.Getenv(envAgent)
	}
	return nil
}

// progress returns the progress callback these flags ask for, and a
// function to call once the import ended.
func (f *addFlags) progress(a *app) (func(image.Event), func()) {
	switch {
	case f.asJSON:
		enc := json.NewEncoder(a.stdout)
		return func(e image.Event) { enc.Encode(e) }, func() {}
	case f.quiet || !isTerminal(a.stderr):
		return nil, func() {}
	}
	d := &progressDisplay{w: a.stderr}
	return d.update, d.finish
}

// add runs an import or a pull with these flags: it checks them, shows
// the progress and prints the image. local does it in this host's store;
// with --host, viaServer has the server do it in its own.
func (f *addFlags) add(a *app, cmd *cobra.Command,
	local func(*image.Store, image.BuildOptions, func(image.Event)) (image.Image, error),
	viaServer func(*remote.Client, func(image.Event)) (remote.Image, error),
) error {
	if err := f.check(cmd); err != nil {
		return err
	}
	if a.host != "" {
		if cmd.Flags().Changed("agent") {
			return usageErrorf(cmd.CommandPath(), "--agent goes with a local image store: with --host the server injects its own agent (kindlingd --agent)")
		}
		c, err := a.imageClient()
		if err != nil {
			return err
		}
		fn, done := f.progress(a)
		im, err := viaServer(c, fn)
		done()
		if err != nil {
			return addErr(cmd, err)
		}
		f.agent = ""
		for _, r := range im.RootFS {
			if r.Agent != "" {
				f.agent = r.Agent
			}
		}
		return f.finish(a, im.Image)
	}
	s, err := a.images()
	if err != nil {
		return err
	}
	fn, done := f.progress(a)
	im, err := local(s, image.BuildOptions{Agent: f.agent}, fn)
	done()
	if err != nil {
		return addErr(cmd, err)
	}
	return f.finish(a, im)
}

// finish prints the result of an import or pull.
func (f *addFlags) finish(a *app, im image.Image) error {
	if f.asJSON {
		return json.NewEncoder(a.stdout).Encode(struct {
			Event string      `json:"event"`
			Image image.Image `json:"image"`
		}{"image", im})
	}
	fmt.Fprintln(a.stdout, im.ID)
	if f.agent == "" {
		fmt.Fprintf(a.stderr, "kindling: note: %s stored without the guest agent: give --agent PATH or set %s to run it\n", imageName(im), envAgent)
	}
	return nil
}

const imageImportLong = `Import the image in FILE or DIR: a 'docker save' tarball, an OCI image
layout directory, or an OCI archive (a tar of a layout). An archive or
layout holding several images needs --ref to pick one. Prints the image ID.`

const imageImportExample = `  kindling image import myapp.tar --agent ./kindling-agent
  kindling image import ./oci-layout --ref myapp:1 --tag myapp:latest
  KINDLING_AGENT=./kindling-agent kindling image import --json myapp.tar`

func newImageImportCommand(a *app) *cobra.Command {
	var (
		f    addFlags
		ref  string
		tags []string
	)
	cmd := &cobra.Command{
		Use:     "import [flags] FILE|DIR",
		Short:   "Import an image from a file or directory",
		Long:    imageImportLong,
		Example: imageImportExample,
		Args:    exactArgs("FILE|DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.add(a, cmd, func(s *image.Store, b image.BuildOptions, fn func(image.Event)) (image.Image, error) {
				return s.Import(cmd.Context(), args[0], image.ImportOptions{BuildOptions: b, Ref: ref, Tags: tags, Progress: fn})
			}, func(c *remote.Client, fn func(image.Event)) (remote.Image, error) {
				// The server reads the path on its host; made absolute
				// here, it means there what it means here on one host.
				path, err := filepath.Abs(args[0])
				if err != nil {
					return remote.Image{}, err
				}
				return c.ImportImage(cmd.Context(), path, ref, tags, fn)
			})
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&ref, "ref", "", "pick the image `NAME` of an archive or layout that holds several")
	cmd.Flags().StringSliceVarP(&tags, "tag", "t", nil, "also name the image `NAME` (repeatable)")
	return cmd
}

const imagePullLong = `Pull image REF from its registry, for linux/amd64, and build its root
filesystem. Credentials come from the docker config ($DOCKER_CONFIG, else
~/.docker/config.json, with its credential helpers); without any the pull
is anonymous. Registries on loopback are spoken to over plain HTTP. Prints
the image ID.`

const imagePullExample = `  kindling image pull alpine:3.20 --agent ./kindling-agent
  kindling image pull ghcr.io/org/app@sha256:<digest>`

func newImagePullCommand(a *app) *cobra.Command {
	var f addFlags
	cmd := &cobra.Command{
		Use:     "pull [flags] REF",
		Short:   "Pull an image from a registry",
		Long:    imagePullLong,
		Example: imagePullExample,
		Args:    exactArgs("REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.add(a, cmd, func(s *image.Store, b image.BuildOptions, fn func(image.Event)) (image.Image, error) {
				return s.Pull(cmd.Context(), args[0], image.PullOptions{BuildOptions: b, Progress: fn})
			}, func(c *remote.Client, fn func(image.Event)) (remote.Image, error) {
				return c.PullImage(cmd.Context(), args[0], fn)
			})
		},
	}
	f.register(cmd)
	return cmd
}

const imageLsLong = `List the images: NAME (one line per name; <none> for an image without
one), ID, CREATED, SIZE (of its files), AGENT (whether a root filesystem
with the guest agent is built) and USERS (how many sandboxes started with
'run IMAGE' and templates built from it exist; 'image inspect' names
them). -q prints only the IDs; --json prints each image as 'kindling image
inspect' does.`

const imageLsExample = `  kindling image ls
  kindling image ls --json`

func newImageLsCommand(a *app) *cobra.Command {
	var lf listFlags
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List images",
		Long:    imageLsLong,
		Example: imageLsExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(cmd); err != nil {
				return err
			}
			views, err := listImageViews(cmd.Context(), a)
			if err != nil {
				return err
			}
			return writeList(a.stdout, lf, views, func(v imageView) string { return v.ID }, func() error {
				return writeImageTable(a.stdout, views, time.Now())
			})
		},
	}
	lf.register(cmd, "print only the IDs")
	return cmd
}

func writeImageTable(w io.Writer, list []imageView, now time.Time) error {
	return writeTable(w, "NAME\tID\tCREATED\tSIZE\tAGENT\tUSERS", func(tw io.Writer) {
		for _, im := range list {
			agent := "no"
			for _, r := range im.RootFS {
				if r.Agent != "" {
					agent = "yes"
				}
			}
			names := im.Refs
			if len(names) == 0 {
				names = []string{"<none>"}
			}
			for _, n := range names {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", image.FamiliarRef(n), image.ShortID(im.ID), ago(now, im.Created), byteSize(im.Size), agent, len(im.Users))
			}
		}
	})
}

const imageInspectLong = `Print images as JSON: ID (the digest of the image's configuration),
manifest digest, names, platform, creation and import times, layers, size,
the process defaults (entrypoint, cmd, env, working_dir, user) and the root
filesystems built from it (per agent, with their paths), and its users
(sandboxes started with 'run IMAGE', templates built from it). NAME is a
name, an ID, a unique prefix of an ID, or a manifest digest.`

const imageInspectExample = `  kindling image inspect alpine:3.20
  kindling image inspect 3f2a | jq -r '.[0].rootfs[0].path'`

func newImageInspectCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "inspect NAME...",
		Short:   "Show images in detail",
		Long:    imageInspectLong,
		Example: imageInspectExample,
		Args:    someArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := inspectImageViews(cmd.Context(), a, args)
			if err != nil {
				return imageHint(err)
			}
			return writeJSON(a.stdout, out)
		},
	}
}

const imageRmLong = `Remove images. NAME as for 'image inspect'; when NAME is one of several
names of an image, only that name is removed. An image that has users —
sandboxes started with 'kindling run IMAGE', templates built from it with
'kindling template create --image' — is refused unless --force is given:
a warning names them; their own copies (the sandboxes', the templates')
go on working and clones still start from the templates, but no new
sandbox or template can be made from the image.`

const imageRmExample = `  kindling image rm alpine:3.20
  kindling image rm -f $(kindling image ls -q)`

func newImageRmCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove images",
		Long:    imageRmLong,
		Example: imageRmExample,
		Args:    someArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			remove, err := imageRemover(cmd, a, force)
			if err != nil {
				return err
			}
			var errs []error
			for _, n := range args {
				r, err := remove(n)
				if err != nil {
					errs = append(errs, imageHint(err))
					continue
				}
				if r.Warning != "" {
					fmt.Fprintf(a.stderr, "kindling: warning: %s\n", r.Warning)
				}
				if r.Untagged != "" {
					fmt.Fprintf(a.stdout, "untagged %s\n", image.FamiliarRef(r.Untagged))
				} else {
					fmt.Fprintf(a.stdout, "deleted %s\n", r.ID)
				}
			}
			if len(errs) > 1 {
				return fmt.Errorf("%d of %d images failed: %w", len(errs), len(args), errors.Join(errs...))
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove it even while in use")
	return cmd
}

// addErr is the error of an import or pull: an interrupt exits 130.
func addErr(cmd *cobra.Command, err error) error {
	if cmd.Context().Err() != nil {
		return &exitStatusError{code: exitInterrupted, err: fmt.Errorf("%s: %w", cmd.CommandPath(), errInterrupted)}
	}
	return imageHint(err)
}

// imageHint adds what a person can do to an image error.
func imageHint(err error) error {
	switch {
	case errors.Is(err, image.ErrNotFound) && !strings.Contains(err.Error(), "no such file"):
		return fmt.Errorf("%w (see 'kindling image ls')", err)
	case errors.Is(err, image.ErrConflict):
		return fmt.Errorf("%w (--force removes it anyway)", err)
	}
	return err
}

func imageName(im image.Image) string {
	if len(im.Refs) > 0 {
		return image.FamiliarRef(im.Refs[0])
	}
	return image.ShortID(im.ID)
}

// progressDisplay shows an import's progress on one terminal line.
type progressDisplay struct {
	w      io.Writer
	shown  bool
	layers map[int]image.Event // the last event of each layer
}

func (d *progressDisplay) update(e image.Event) {
	var line string
	switch e.Kind {
	case image.EventResolved:
		line = fmt.Sprintf("%s: %d layers", image.ShortID(e.ID), e.Layers)
	case image.EventCached:
		line = fmt.Sprintf("%s: in the store already", image.ShortID(e.ID))
	case image.EventLayer:
		if d.layers == nil {
			d.layers = map[int]image.Event{}
		}
		d.layers[e.Layer] = e
		done := 0
		for _, l := range d.layers {
			if l.LayerDone {
				done++
			}
		}
		line = fmt.Sprintf("%s: layer %d/%d %s, %d done, %s read at %s/s", image.ShortID(e.ID), e.Layer, e.Layers,
			strings.TrimPrefix(e.Digest, "sha256:")[:min(12, len(strings.TrimPrefix(e.Digest, "sha256:")))],
			done, byteSize(e.Total), byteSize(int64(e.Rate)))
	case image.EventBuild:
		line = fmt.Sprintf("%s: writing the ext4 root filesystem", image.ShortID(e.ID))
	case image.EventDone:
		line = fmt.Sprintf("%s: done", image.ShortID(e.ID))
	default:
		return
	}
	fmt.Fprintf(d.w, "\r\033[K%s", line)
	d.shown = true
}

func (d *progressDisplay) finish() {
	if d.shown {
		fmt.Fprint(d.w, "\r\033[K")
	}
}

// imageClient returns the client of the server --host names, whose image
// store the image commands then use.
func (a *app) imageClient() (*remote.Client, error) {
	c, err := a.controller()
	if err != nil {
		return nil, err
	}
	return c.(*remote.Client), nil
}

// listImageViews lists the images of the store the commands use (this
// host's, or the server's with --host) with their users.
func listImageViews(ctx context.Context, a *app) ([]imageView, error) {
	if a.host != "" {
		c, err := a.imageClient()
		if err != nil {
			return nil, err
		}
		list, err := c.ListImages(ctx)
		return remoteImageViews(list), err
	}
	s, err := a.images()
	if err != nil {
		return nil, err
	}
	list, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	return imageViews(ctx, a, list), nil
}

// inspectImageViews describes the images names designate, as
// listImageViews.
func inspectImageViews(ctx context.Context, a *app, names []string) ([]imageView, error) {
	if a.host != "" {
		c, err := a.imageClient()
		if err != nil {
			return nil, err
		}
		out := make([]remote.Image, 0, len(names))
		for _, n := range names {
			im, err := c.InspectImage(ctx, n)
			if err != nil {
				return nil, err
			}
			out = append(out, im)
		}
		return remoteImageViews(out), nil
	}
	s, err := a.images()
	if err != nil {
		return nil, err
	}
	out := make([]image.Image, 0, len(names))
	for _, n := range names {
		im, err := s.Inspect(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return imageViews(ctx, a, out), nil
}

// remoteImageViews are a server's images as the image commands print
// them; never nil.
func remoteImageViews(list []remote.Image) []imageView {
	out := make([]imageView, len(list))
	for i, im := range list {
		out[i] = imageView{Image: im.Image, Users: im.Users}
		if out[i].Users == nil {
			out[i].Users = []imageUser{}
		}
	}
	return out
}

// imageRemover returns what 'image rm' calls for each name: a removal in
// this host's store, refused while the image has users (sandboxes started
// with 'run IMAGE' carry its ID in a label; templates built from it record
// it) unless forced, or the same done by the server --host names.
func imageRemover(cmd *cobra.Command, a *app, force bool) (func(name string) (image.Removed, error), error) {
	ctx := cmd.Context()
	if a.host != "" {
		c, err := a.imageClient()
		if err != nil {
			return nil, err
		}
		return func(name string) (image.Removed, error) { return c.RemoveImage(ctx, name, force) }, nil
	}
	s, err := a.images()
	if err != nil {
		return nil, err
	}
	return func(name string) (image.Removed, error) {
		return s.Remove(ctx, name, image.RemoveOptions{Force: force, InUse: imageUsers(cmd, a)})
	}, nil
}
