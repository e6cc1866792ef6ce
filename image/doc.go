// Package image turns OCI container images into bootable ext4 root
// filesystems for Firecracker guests, and keeps them in a store on disk keyed
// by digest, so that the second start from an image costs nothing.
//
// A Store lives in one directory (the CLI uses <state root>/.images). Import
// reads a `docker save` tarball, an OCI image layout directory or an OCI
// archive (a tar of a layout); Pull fetches from a registry, anonymously or
// with the credentials of the user's docker config. Either way the image's
// layers are flattened (whiteouts applied) into a staging directory, the
// guest agent is injected under /.kindling, and `mkfs.ext4 -d` writes a
// reproducible ext4 file: the same image and agent give byte-identical
// bytes. Clone gives each sandbox its own writable copy of that file
// without copying its data, and Grow enlarges a copy.
//
// It is not the runtime: it knows nothing of sandboxes, templates or
// Firecracker. A caller that boots images (package sandbox, the CLI) passes
// the guest agent's path, boots the root filesystem with BootArg, and tells
// Remove which images are in use through a hook.
//
// It imports go-containerregistry (image formats, registries, layer
// flattening), internal/store (atomic writes and locks) and
// internal/errdefs; it runs e2fsprogs' mkfs.ext4, debugfs and resize2fs.
package image
