package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
)

// envKernel names the guest kernel used when neither --kernel nor the
// config file gives one (for 'run IMAGE').
const envKernel = "KINDLING_KERNEL"

// labelImage is the sandbox label that records the ID of the image a
// sandbox was started from; 'image rm' refuses an image that sandboxes
// still carry it for.
const labelImage = "kindling.image"

// runImageOptions are the flags of run that matter to 'run IMAGE'.
type runImageOptions struct {
	runCommandOptions
	diskSize string
	asJSON   bool // with detach: print the sandbox as JSON
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
		if sha, err := fileSHA256(p); err == nil {
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
// leaves the sandbox running with the agent ready for 'kindling exec' and
// 'kindling cp', and does not start the image's process.
func runImage(cmd *cobra.Command, a *app, sf *specFlags, im image.Image, command []string, o runImageOptions) error {
	path := cmd.CommandPath()
	args := imageArgs(im.Config, command)
	switch {
	case o.detach && command != nil:
		return usageErrorf(path, "--detach does not go with a command: start the sandbox with -d, then use 'kindling exec'")
	case o.template != "":
		return usageErrorf(path, "image %s does not go with --template: the template fixes the root filesystem", imageName(im))
	case cmd.Flags().Changed("rootfs"):
		return usageErrorf(path, "the root filesystem is given twice (image %s and --rootfs): give one", imageName(im))
	case o.asJSON && !o.detach:
		return usageErrorf(path, "--json needs --detach (in the foreground run prints the process's output)")
	case !o.detach && len(args) == 0:
		return usageErrorf(path, "image %s has no entrypoint and no command: give the command after '--'", imageName(im))
	case o.detach && (o.exec.interactive || o.exec.tty || len(o.exec.env) > 0 || o.exec.workdir != "" || o.exec.user != ""):
		return usageErrorf(path, "-i, -t, -e, -w and -u go with a foreground run: leave out --detach, or give them to 'kindling exec'")
	}
	if err := o.exec.check(path); err != nil {
		return err
	}
	var grow int64
	if o.diskSize != "" {
		mib, err := sandbox.ParseMemory(o.diskSize)
		if err != nil {
			return usageErrorf(path, "--disk-size %q: %v: give a size like 2G", o.diskSize, err)
		}
		grow = int64(mib) << 20
	}
	rfs, err := agentRootfs(im)
	if err != nil {
		return err
	}
	if grow != 0 && grow < rfs.Size {
		return usageErrorf(path, "--disk-size %s is smaller than image %s's root filesystem (%d MiB): give a larger size", o.diskSize, imageName(im), rfs.Size>>20)
	}
	spec, err := sf.spec(cmd)
	if err != nil {
		return err
	}
	if spec.Kernel == "" {
		spec.Kernel = os.Getenv(envKernel)
	}
	if spec.Kernel == "" {
		return usageErrorf(path, "running an image needs a Linux guest kernel: give --kernel PATH, 'kernel' in the config file, or $%s (see docs/guests.md to get one)", envKernel)
	}
	if spec.Kernel, err = filepath.Abs(spec.Kernel); err != nil {
		return err
	}
	if _, err := os.Stat(spec.Kernel); err != nil {
		return fmt.Errorf("guest kernel: %w: give the path of a vmlinux (see docs/guests.md)", err)
	}
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[labelImage] = im.ID
	spec.Agent = true
	if !strings.Contains(" "+spec.KernelArgs, " init=") {
		spec.KernelArgs = strings.TrimSpace(image.BootArg + " " + spec.KernelArgs)
	}
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
		if o.asJSON {
			return writeJSON(a.stdout, sandboxView(info))
		}
		fmt.Fprintln(a.stdout, info.ID)
		return nil
	}
	a.logger().Debug("running the image's process", "sandbox", id, "args", args)
	runErr := execAttached(ctx, a, rt, id, args, o.exec)
	return endCommandRun(ctx, rt, id, o.rm, runErr)
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

// imageUsers returns the 'image rm' InUse hook: the sandboxes started from
// the image (by their label). A state root that cannot be read reports
// nothing, as no sandbox can be found in it.
func imageUsers(cmd *cobra.Command, a *app) func(id string) []string {
	return func(id string) []string {
		rt, err := a.runtime()
		if err != nil {
			return nil
		}
		list, err := rt.List(cmd.Context(), sandbox.ListOptions{Labels: map[string]string{labelImage: id}})
		if err != nil {
			return nil
		}
		var users []string
		for _, in := range list {
			users = append(users, "sandbox "+in.ID)
		}
		return users
	}
}

// fileSHA256 is the SHA-256 (hex) of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
