package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/sandbox"
)

const cpLong = `Copy files and directories between the host and a running sandbox, through
the guest agent.

  kindling cp SRC SANDBOX:DST     host to guest
  kindling cp SANDBOX:SRC DST     guest to host

Directories are copied whole. Permission bits are kept; files are owned by
the guest's default user (or -u USER) in the guest and by you on the host.
Symbolic links are not copied (the agent cannot make them): each is named
on stderr.

When DST is an existing directory, SRC is copied into it under its own
name; otherwise DST is the copy's path (missing parents are created).

SRC - reads a tar stream from stdin and unpacks it into the guest
directory DST; DST - writes SRC (a file or a directory) to stdout as a tar
stream. A host path holding ':' is written with a directory, as ./a:b.`

const cpExample = `  kindling cp ./site web:/srv/www
  kindling cp web:/var/log/app.log .
  tar -C build -c . | kindling cp - web:/srv/app
  kindling cp web:/srv/app - | tar -t`

func newCpCommand(a *app) *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:     "cp [flags] SRC SANDBOX:DST | SANDBOX:SRC DST",
		Short:   "Copy files between the host and a sandbox",
		Long:    cpLong,
		Example: cpExample,
		Args:    exactArgs("SRC", "DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcID, src := splitCopyArg(args[0])
			dstID, dst := splitCopyArg(args[1])
			switch {
			case srcID != "" && dstID != "":
				return usageErrorf(cmd.CommandPath(), "both SRC and DST are in sandboxes: copy through the host")
			case srcID == "" && dstID == "":
				return usageErrorf(cmd.CommandPath(), "neither SRC nor DST names a sandbox: write one as SANDBOX:PATH")
			case src == "" || dst == "":
				return usageErrorf(cmd.CommandPath(), "empty path: give SANDBOX:PATH and a host path")
			}
			arg := srcID
			if dstID != "" {
				arg = dstID
			}
			g, id, err := a.guestID(cmd.Context(), arg)
			if err != nil {
				return err
			}
			c := &copier{ctx: cmd.Context(), g: g, id: id, o: sandbox.FileOptions{User: user}, warn: a.stderr}
			if dstID != "" {
				if src == "-" {
					return c.untarIn(os.Stdin, dst)
				}
				return c.upload(src, dst)
			}
			if dst == "-" {
				return c.tarOut(a.stdout, src)
			}
			return c.download(src, dst)
		},
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "act as guest `USER`: it owns what is written in the guest")
	return cmd
}

// splitCopyArg reads SANDBOX:PATH; a host path (no ':', or starting with
// '/' or '.') gives an empty ID.
func splitCopyArg(s string) (id, p string) {
	if s == "-" || strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return "", s
	}
	id, p, ok := strings.Cut(s, ":")
	if !ok || store.ValidateID(id) != nil {
		return "", s
	}
	return id, p
}

// copier copies between the host and the guest of sandbox id.
type copier struct {
	ctx  context.Context
	g    sandbox.Guest
	id   string
	o    sandbox.FileOptions
	warn io.Writer
}

// guestDest is where src goes in the guest when copied to dst: into dst
// if it is an existing directory.
func (c *copier) guestDest(src, dst string) (string, error) {
	fi, err := c.g.StatFile(c.ctx, c.id, dst, c.o)
	switch {
	case err == nil && fi.Type == sandbox.TypeDir:
		return path.Join(dst, filepath.Base(src)), nil
	case err == nil || errors.Is(err, sandbox.ErrNotFound):
		return dst, nil
	}
	return "", err
}

// upload copies the host file or directory src to dst in the guest.
func (c *copier) upload(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	if dst, err = c.guestDest(src, dst); err != nil {
		return err
	}
	if !fi.IsDir() {
		return c.putOne(src, dst, fi)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("cp: %w", err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("cp: %w", err)
		}
		return c.putOne(p, target, info)
	})
}

// putOne copies one host entry to target in the guest, with its mode.
func (c *copier) putOne(p, target string, fi fs.FileInfo) error {
	switch {
	case fi.IsDir():
		if err := c.g.MakeDir(c.ctx, c.id, target, c.o); err != nil && !errors.Is(err, sandbox.ErrExists) {
			return err
		}
	case fi.Mode().IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("cp: %w", err)
		}
		err = c.g.PutFile(c.ctx, c.id, target, f, c.o)
		f.Close()
		if err != nil {
			return err
		}
	default:
		fmt.Fprintf(c.warn, "kindling cp: %s: not copied (%s)\n", p, kindOf(fi.Mode()))
		return nil
	}
	return c.g.Chmod(c.ctx, c.id, target, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), c.o)
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// untarIn unpacks a tar stream into the guest directory dst.
func (c *copier) untarIn(r io.Reader, dst string) error {
	if err := c.g.MakeDir(c.ctx, c.id, dst, c.o); err != nil && !errors.Is(err, sandbox.ErrExists) {
		return err
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cp: read the tar stream: %w", err)
		}
		name := path.Clean("/" + h.Name) // never above dst
		if name == "/" {
			continue
		}
		target := path.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := c.g.MakeDir(c.ctx, c.id, target, c.o); err != nil && !errors.Is(err, sandbox.ErrExists) {
				return err
			}
		case tar.TypeReg:
			if err := c.g.PutFile(c.ctx, c.id, target, tr, c.o); err != nil {
				return err
			}
		default:
			fmt.Fprintf(c.warn, "kindling cp: %s: not copied (tar entry type %q)\n", h.Name, h.Typeflag)
			continue
		}
		if err := c.g.Chmod(c.ctx, c.id, target, goFileMode(h.Mode), c.o); err != nil {
			return err
		}
	}
}

// goFileMode turns Unix mode bits into an fs.FileMode.
func goFileMode(m int64) fs.FileMode {
	mode := fs.FileMode(m) & fs.ModePerm
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// walkGuest calls fn for src and, if it is a directory, everything under
// it, parents first.
func (c *copier) walkGuest(src string, fn func(rel string, fi sandbox.FileInfo) error) error {
	fi, err := c.g.StatFile(c.ctx, c.id, src, c.o)
	if err != nil {
		return err
	}
	if err := fn(".", fi); err != nil || fi.Type != sandbox.TypeDir {
		return err
	}
	var walk func(dir, rel string) error
	walk = func(dir, rel string) error {
		ents, err := c.g.ListDir(c.ctx, c.id, dir, 1, c.o)
		if err != nil {
			return err
		}
		for _, e := range ents {
			r := path.Join(rel, e.Name)
			if err := fn(r, e); err != nil {
				return err
			}
			if e.Type == sandbox.TypeDir {
				if err := walk(path.Join(dir, e.Name), r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(fi.Path, ".")
}

// download copies the guest file or directory src to the host path dst.
func (c *copier) download(src, dst string) error {
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		dst = filepath.Join(dst, path.Base(src))
	}
	// Directories get their modes last, so that a read-only one can be
	// filled first.
	type dirMode struct {
		path string
		mode fs.FileMode
	}
	var dirs []dirMode
	err := c.walkGuest(src, func(rel string, fi sandbox.FileInfo) error {
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch fi.Type {
		case sandbox.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return fmt.Errorf("cp: %w", err)
			}
			dirs = append(dirs, dirMode{target, fi.Mode})
			return nil
		case sandbox.TypeFile:
			if err := c.getOne(fi.Path, target); err != nil {
				return err
			}
		default:
			fmt.Fprintf(c.warn, "kindling cp: %s: not copied (%s)\n", fi.Path, fi.Type)
			return nil
		}
		if err := os.Chmod(target, fi.Mode); err != nil {
			return fmt.Errorf("cp: %w", err)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0 && err == nil; i-- {
		if cerr := os.Chmod(dirs[i].path, dirs[i].mode); cerr != nil {
			err = fmt.Errorf("cp: %w", cerr)
		}
	}
	return err
}

// getOne copies the guest file p to the host path target.
func (c *copier) getOne(p, target string) error {
	rc, err := c.g.GetFile(c.ctx, c.id, p, c.o)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cp %s: %w", p, err)
	}
	return nil
}

// tarOut writes the guest file or directory src to w as a tar stream,
// named under src's base name.
func (c *copier) tarOut(w io.Writer, src string) error {
	tw := tar.NewWriter(w)
	base := path.Base(path.Clean(src))
	err := c.walkGuest(src, func(rel string, fi sandbox.FileInfo) error {
		name := path.Join(base, rel)
		h := &tar.Header{Name: name, Mode: int64(fi.Mode.Perm()), ModTime: fi.ModTime, Uname: fi.Owner, Gname: fi.Group}
		switch fi.Type {
		case sandbox.TypeDir:
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
			return tw.WriteHeader(h)
		case sandbox.TypeFile:
			h.Typeflag, h.Size = tar.TypeReg, fi.Size
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			rc, err := c.g.GetFile(c.ctx, c.id, fi.Path, c.o)
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.Copy(tw, rc)
			if err == nil && n != fi.Size {
				err = fmt.Errorf("cp %s: its size changed while it was copied (%d bytes, then %d)", fi.Path, fi.Size, n)
			}
			return err
		}
		fmt.Fprintf(c.warn, "kindling cp: %s: not copied (%s)\n", fi.Path, fi.Type)
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
