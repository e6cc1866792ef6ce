package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// envKernel names the guest kernel used when neither --kernel nor the
// config file gives one (for 'run IMAGE').
const envKernel = "KINDLING_KERNEL"

// labelImage is the sandbox label that records the ID of the image a
// sandbox was started from; 'image rm' refuses an image that sandboxes
// still carry it for.
const labelImage = template.LabelImage

// runImageOptions are the flags of run that matter to 'run IMAGE'.
type runImageOptions struct {
	runCommandOptions
	diskSize string
}

// resolveRunImage says whether run's positional argument arg names an
// image rather than a root filesystem file: a file of that path wins; else
// the image store is asked (a name, an ID or a unique prefix). ok is false
// when arg is a file, or when it is neither (the caller reports the file
// as missing then).
func resolveRunImage(ctx context.Context, a *app, arg string) (im image.Image, ok bool, err error) {
	if _, err := os.Stat(arg); err == nil {
		return image.Image{}, false, nil
	}
	root := a.root
	if root == "" {
		root = store.DefaultRoot()
	}
	if _, err := os.Stat(filepath.Join(root, imagesDir)); err != nil {
		return image.Image{}, false, nil // no image store: nothing to create for a missing file
	}
	s, err := a.images()
	if err != nil {
		return image.Image{}, false, err
	}
	im, err = s.Resolve(ctx, arg)
	if errors.Is(err, image.ErrNotFound) {
		return image.Image{}, false, nil
	}
	if err != nil {
		return image.Image{}, false, imageHint(err)
	}
	return im, true, nil
}

// agentRootfs picks the image's root filesystem that holds the guest agent:
// the one built with $KINDLING_AGENT's binary when there is one, else the
// last built with any agent.
func agentRootfs(im image.Image) (image.RootFS, error) {
	var found image.RootFS
	for _, r := range im.RootFS {
		if r.Agent != "" {
			found = r
		}
	}
	if found.Agent == "" {
		return image.RootFS{}, fmt.Errorf("image %s was stored without the guest agent: import or pull it again with --agent PATH (or $%s)", imageName(im), envAgent)
	}
	if p := os.Getenv(envAgent); p != "" {
		if sha, err := image.AgentDigest(p); err == nil {
			if r, ok := im.RootFSFor(sha); ok {
				return r, nil
			}
		}
	}
	return found, nil
}

// imageArgs is what 'run IMAGE [-- CMD]' runs: docker's rule, a CMD given
// replaces the image's cmd and keeps its entrypoint.
func imageArgs(c image.Config, command []string) []string {
	cmd := c.Cmd
	if command != nil {
		cmd = command
	}
	return append(append([]string{}, c.Entrypoint...), cmd...)
}

// runImage is 'kindling run IMAGE [-- CMD]': the sandbox boots its own
// copy of the image's root filesystem with the agent as init. In the
// foreground it runs the image's process (or CMD), stops the sandbox (with
// --rm removes it) and exits with the process's status; with --detach it
// starts the process detached, its output going to the sandbox's console
// log, and leaves the sandbox running (for 'kindling exec' and 'cp' too).
func runImage(cmd *cobra.Command, a *app, sf *specFlags, im image.Image, command []string, o runImageOptions) error {
	path := cmd.CommandPath()
	args := imageArgs(im.Config, command)
	switch {
	case o.template != "":
		return usageErrorf(path, "image %s does not go with --template: the template fixes the root filesystem", imageName(im))
	case cmd.Flags().Changed("rootfs"):
		return usageErrorf(path, "the root filesystem is given twice (image %s and --rootfs): give one", imageName(im))
	case o.asJSON && !o.detach:
		return usageErrorf(path, "--json needs --detach (in the foreground run prints the process's output)")
	case len(args) == 0:
		return usageErrorf(path, "image %s has no entrypoint and no command: give the command after '--'", imageName(im))
	case o.detach && (o.exec.interactive || o.exec.tty):
		return usageErrorf(path, "-i and -t go with a foreground run: a detached process reads nothing and writes to the sandbox's console ('kindling logs'); leave out --detach, or give them to 'kindling exec'")
	}
	if err := o.exec.check(path); err != nil {
		return err
	}
	rfs, err := agentRootfs(im)
	if err != nil {
		return err
	}
	grow, err := parseDiskSize(cmd, o.diskSize, im, rfs)
	if err != nil {
		return err
	}
	spec, err := imageSpec(cmd, sf, "running an image")
	if err != nil {
		return err
	}
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[labelImage] = im.ID
	ctx := cmd.Context()
	if err := ensureFirecracker(ctx, a, spec.Firecracker, o.autoInstall); err != nil {
		return err
	}
	if err := a.preflight(ctx, spec.Firecracker); err != nil {
		return err
	}
	rt, err := a.runtime()
	if err != nil {
		return err
	}
	// The copy lives in the sandbox's directory, so that removing the
	// sandbox removes it.
	spec.Rootfs = &sandbox.Disk{Path: rfs.Path}
	created, err := rt.Create(ctx, spec, sandbox.CreateOptions{
		AutoRemove: o.rm && o.detach,
		CopyRootfs: func(ctx context.Context, src, dst string) error { return prepareImageRootfs(ctx, src, dst, grow) },
	})
	if err != nil {
		return err
	}
	id := created.ID
	bg := context.WithoutCancel(ctx)
	a.logger().Debug("created sandbox from image", "id", id, "image", im.ID)
	info, err := startSandbox(ctx, rt, id, o.timeout)
	if err != nil {
		if !keepFailed(ctx, rt, id, err, o.rm) {
			err = errors.Join(err, removeQuietly(bg, rt, id))
		}
		return err
	}
	if o.detach {
		// The image's process runs on its own, its output on the console.
		return runDetached(ctx, a, rt, info, args, o.runCommandOptions)
	}
	a.logger().Debug("running the image's process", "sandbox", id, "args", args)
	runErr := execAttached(ctx, a, rt, id, args, o.exec)
	return endCommandRun(ctx, rt, id, o.rm, runErr)
}

// imageSpec is the spec of a sandbox that boots an image's root
// filesystem (set by the caller), from the flags: a Linux guest kernel
// (--kernel, the config file's, else $KINDLING_KERNEL) that exists, the
// agent on, and the image's agent as init unless --kernel-args names one.
// what says what needs the kernel, for its error.
func imageSpec(cmd *cobra.Command, sf *specFlags, what string) (sandbox.Spec, error) {
	spec, err := sf.spec(cmd)
	if err != nil {
		return sandbox.Spec{}, err
	}
	if spec.Kernel == "" {
		spec.Kernel = os.Getenv(envKernel)
	}
	if spec.Kernel == "" {
		return sandbox.Spec{}, usageErrorf(cmd.CommandPath(), "%s needs a Linux guest kernel: give --kernel PATH, 'kernel' in the config file, or $%s (see docs/guests.md to get one)", what, envKernel)
	}
	if spec.Kernel, err = filepath.Abs(spec.Kernel); err != nil {
		return sandbox.Spec{}, err
	}
	if _, err := os.Stat(spec.Kernel); err != nil {
		return sandbox.Spec{}, fmt.Errorf("guest kernel: %w: give the path of a vmlinux (see docs/guests.md)", err)
	}
	spec.Agent = true
	if !strings.Contains(" "+spec.KernelArgs, " init=") {
		spec.KernelArgs = strings.TrimSpace(image.BootArg + " " + spec.KernelArgs)
	}
	return spec, nil
}

// parseDiskSize parses --disk-size for image im's root filesystem rfs: 0
// when not given; a size below the file's is refused.
func parseDiskSize(cmd *cobra.Command, v string, im image.Image, rfs image.RootFS) (int64, error) {
	if v == "" {
		return 0, nil
	}
	mib, err := sandbox.ParseMemory(v)
	if err != nil {
		return 0, usageErrorf(cmd.CommandPath(), "--disk-size %q: %v: give a size like 2G", v, err)
	}
	if size := int64(mib) << 20; size >= rfs.Size {
		return size, nil
	}
	return 0, usageErrorf(cmd.CommandPath(), "--disk-size %s is smaller than image %s's root filesystem (%d MiB): give a larger size", v, imageName(im), rfs.Size>>20)
}

// prepareImageRootfs makes dst the sandbox's copy of base, grown to grow
// bytes when that is not 0.
func prepareImageRootfs(ctx context.Context, base, dst string, grow int64) error {
	if err := image.Clone(base, dst); err != nil {
		return err
	}
	if grow != 0 {
		return image.Grow(ctx, dst, grow)
	}
	return nil
}

// imageUser is what uses an image: a sandbox started with 'run IMAGE' (or
// a template's builder, while it runs), or a template built from it.
type imageUser = template.ImageUser

// imageView is an image as 'image ls --json' and 'image inspect' print it:
// its record and its users.
type imageView struct {
	image.Image
	Users []imageUser `json:"users"`
}

// imageUsersOf maps image IDs to their users: the sandboxes labelled with
// the image's ID and the templates built from it. A state root that
// cannot be read reports nothing, as nothing can be found in it.
func imageUsersOf(ctx context.Context, a *app) map[string][]imageUser {
	rt, err := a.runtime()
	if err != nil {
		return map[string][]imageUser{}
	}
	ts, _ := template.Open(rt, a.templateOptions()...)
	out, _ := template.ImageUsers(ctx, rt, ts)
	return out
}

// imageViews pairs each image of list with its users; never nil.
func imageViews(ctx context.Context, a *app, list []image.Image) []imageView {
	users := imageUsersOf(ctx, a)
	out := make([]imageView, len(list))
	for i, im := range list {
		out[i] = imageView{Image: im, Users: users[im.ID]}
		if out[i].Users == nil {
			out[i].Users = []imageUser{}
		}
	}
	return out
}

// imageUsers returns the 'image rm' InUse hook: the image's users (see
// imageUsersOf).
func imageUsers(cmd *cobra.Command, a *app) func(id string) []string {
	return func(id string) []string {
		var names []string
		for _, u := range imageUsersOf(cmd.Context(), a)[id] {
			names = append(names, u.String())
		}
		return names
	}
}
