package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kindling-vm/kindling/image"
)

// mke2fsConf fixes the ext4 features of the file systems the shim builds,
// whatever the host's /etc/mke2fs.conf says: the set kindling's images use,
// which guest kernels from 4.14 on mount.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	blocksize = 4096
	inode_size = 256
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// mkfs builds an ext4 file system in the new file dst holding the tree at
// dir, sized for the tree plus headroom. dst is removed on failure.
func mkfs(ctx context.Context, dir, dst string, headroomMiB int64) (err error) {
	bin, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mkfs.ext4"); err != nil {
			return errors.New("mkfs.ext4 not found: install e2fsprogs")
		}
	}
	var used, files int64
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		files++
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			used += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("measure %s: %w", dir, err)
	}
	size := used + used/10 + files*4096 + headroomMiB<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	conf := dst + ".mke2fs.conf"
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o600); err != nil {
		return fmt.Errorf("write mke2fs config: %w", err)
	}
	defer os.Remove(conf)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			os.Remove(dst)
		}
	}()
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("size %s: %w", dst, err)
	}
	inodes := max(2*files+4096, size/(64<<10))
	cmd := exec.CommandContext(ctx, bin, "-q", "-F", "-t", "ext4", "-N", fmt.Sprint(inodes), "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-d", dir, dst)
	cmd.Env = append(os.Environ(), "MKE2FS_CONFIG="+conf, "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// baseRootfs returns the guest's root filesystem for agent: the agent as
// init (image.AgentPath), an empty image config and the mount points,
// nothing else. It is built once per agent binary under root and shared,
// read-only, by every VM.
func baseRootfs(ctx context.Context, root, agent string) (string, error) {
	sum, err := image.AgentDigest(agent)
	if err != nil {
		return "", fmt.Errorf("read guest agent: %w", err)
	}
	dir := filepath.Join(root, shimDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "base-"+sum[:16]+".ext4")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	stage, err := os.MkdirTemp(dir, ".base-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	tree := filepath.Join(stage, "root")
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", filepath.Dir(image.AgentPath)} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(filepath.Join(tree, "tmp"), 0o1777); err != nil {
		return "", err
	}
	if err := copyFile(agent, filepath.Join(tree, image.AgentPath), 0o755); err != nil {
		return "", fmt.Errorf("copy guest agent: %w", err)
	}
	// The agent runs its processes as a user of the guest's /etc/passwd.
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/passwd"), []byte("root:x:0:0:root:/:/sbin/nologin\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		return "", err
	}
	cfg := `{"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"working_dir":"/","user":"root","entrypoint":[],"cmd":[]}` + "\n"
	if err := os.WriteFile(filepath.Join(tree, image.ConfigPath), []byte(cfg), 0o644); err != nil {
		return "", err
	}
	tmp := filepath.Join(stage, "base.ext4")
	if err := mkfs(ctx, tree, tmp, 16); err != nil {
		return "", fmt.Errorf("build the guest's base root filesystem: %w", err)
	}
	// Concurrent shims may both build it: the same content, the last
	// rename wins.
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
