package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// mke2fsConf fixes the ext4 features instead of taking the host's
// /etc/mke2fs.conf, so that the same image gives the same bytes on every
// host and the guest kernel gets features every kernel of the v1 line's
// era mounts (no orphan_file, no metadata_csum_seed): Debian's ext4 set.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// Sizing of a root filesystem: the blocks its files need plus headroom for
// metadata and the journal and free space for the guest. The file is
// sparse, so free space costs no host disk.
const (
	headroomFixed = 256 << 20 // bytes
	headroomRatio = 10        // percent of the content
	sizeAlign     = 4 << 20
	minInodes     = 16384
)

// ext4Size returns the size of the ext4 file and its inode count for a
// staging tree with these stats.
func ext4Size(st buildStats) (size int64, inodes int64) {
	content := st.Blocks * 4096
	size = content + content*headroomRatio/100 + headroomFixed
	size = (size + sizeAlign - 1) / sizeAlign * sizeAlign
	inodes = max(size/16384, 2*int64(st.Entries)+minInodes)
	return size, inodes
}

// tool finds an e2fsprogs program on PATH or in the sbin directories that
// a non-root PATH often lacks.
func tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errorf(ErrNotSupported, "%s not found: install e2fsprogs (apt-get install e2fsprogs)", name)
}

// derivedUUID is a UUID (version 8, RFC 9562) derived from label and the
// parts, so that a build's UUID and hash seed are functions of what is
// built.
func derivedUUID(label string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte("kindling/" + label))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// e2env is the environment of e2fsprogs runs: the fixed configuration, a
// fixed clock, and the C locale (mke2fs -d sorts directory entries with
// strcoll).
func e2env(conf string, epoch time.Time) []string {
	t := strconv.FormatInt(epoch.Unix(), 10)
	env := []string{"MKE2FS_CONFIG=" + conf, "E2FSPROGS_FAKE_TIME=" + t, "SOURCE_DATE_EPOCH=" + t, "LC_ALL=C", "TZ=UTC"}
	if p := os.Getenv("PATH"); p != "" {
		env = append(env, "PATH="+p)
	}
	return env
}

// runTool runs an e2fsprogs program; a failure's error holds the last line
// it printed.
func runTool(ctx context.Context, env []string, name string, args ...string) error {
	p, err := tool(name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w: %s", name, err, lastLine(out.String()))
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "mke2fs ") && !strings.HasPrefix(l, "debugfs ") {
			return l
		}
	}
	return "(no output)"
}

// mkfsOptions are the inputs of one ext4 build.
type mkfsOptions struct {
	staging string // the tree to copy in
	out     string // the file to write (created)
	work    string // a directory for the configuration and command files
	epoch   time.Time
	uuid    string // also gives the hash seed
	st      buildStats
}

// mkfs writes the staging tree into a new ext4 file, then sets every
// inode's change and access times to epoch (mke2fs copies them from the
// staging files, whose change time is the build's clock).
func mkfs(ctx context.Context, o mkfsOptions) error {
	conf := filepath.Join(o.work, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o600); err != nil {
		return err
	}
	env := e2env(conf, o.epoch)
	size, inodes := ext4Size(o.st)
	f, err := os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	seed := derivedUUID("hash-seed", o.uuid)
	err = runTool(ctx, env, "mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256",
		"-N", strconv.FormatInt(inodes, 10), "-m", "0", "-U", o.uuid,
		"-E", "hash_seed="+seed+",lazy_journal_init=1,root_owner=0:0",
		"-d", o.staging, o.out)
	if err != nil {
		return err
	}
	used, err := usedInodes(o.out)
	if err != nil {
		return err
	}
	var cmds bytes.Buffer
	e := strconv.FormatInt(o.epoch.Unix(), 10)
	for _, ino := range used {
		fmt.Fprintf(&cmds, "sif <%d> ctime @%s\nsif <%d> atime @%s\n", ino, e, ino, e)
	}
	cmdFile := filepath.Join(o.work, "times.debugfs")
	if err := os.WriteFile(cmdFile, cmds.Bytes(), 0o600); err != nil {
		return err
	}
	if err := runTool(ctx, env, "debugfs", "-w", "-f", cmdFile, o.out); err != nil {
		return err
	}
	f, err = os.OpenFile(o.out, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ext4 on-disk constants (see the kernel's fs/ext4/ext4.h).
const (
	ext4Magic        = 0xEF53
	incompat64bit    = 0x80
	bgInodeUninit    = 0x1
	ext4RootIno      = 2
	superblockOffset = 1024
)

// usedInodes lists the inodes in use in the ext4 file at path, from its
// group descriptors and inode bitmaps: the root and every inode from the
// first non-reserved one on.
func usedInodes(path string) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, superblockOffset); err != nil {
		return nil, fmt.Errorf("read ext4 superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != ext4Magic {
		return nil, errorf(ErrCorrupt, "%s is not an ext4 file system", path)
	}
	inodesCount := le.Uint32(sb[0x0:])
	firstData := le.Uint32(sb[0x14:])
	blockSize := int64(1024) << le.Uint32(sb[0x18:])
	perGroup := le.Uint32(sb[0x28:])
	firstIno := le.Uint32(sb[0x54:])
	descSize := int64(32)
	if le.Uint32(sb[0x60:])&incompat64bit != 0 {
		descSize = int64(le.Uint16(sb[0xFE:]))
	}
	if perGroup == 0 || descSize < 32 || blockSize > 64<<10 {
		return nil, errorf(ErrCorrupt, "%s: bad ext4 superblock", path)
	}
	groups := (inodesCount + perGroup - 1) / perGroup
	gdt := make([]byte, int64(groups)*descSize)
	if _, err := f.ReadAt(gdt, (int64(firstData)+1)*blockSize); err != nil {
		return nil, fmt.Errorf("read ext4 group descriptors: %w", err)
	}
	bitmap := make([]byte, (perGroup+7)/8)
	var used []uint32
	for g := range groups {
		d := gdt[int64(g)*descSize:]
		if le.Uint16(d[0x12:])&bgInodeUninit != 0 {
			continue
		}
		blk := int64(le.Uint32(d[0x4:]))
		if descSize >= 64 {
			blk |= int64(le.Uint32(d[0x24:])) << 32
		}
		if _, err := f.ReadAt(bitmap, blk*blockSize); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read ext4 inode bitmap: %w", err)
		}
		for i := range perGroup {
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			ino := g*perGroup + i + 1
			if ino == ext4RootIno || ino >= firstIno {
				used = append(used, ino)
			}
		}
	}
	return used, nil
}

// Grow enlarges the ext4 file system in the file at path to size bytes:
// the file is extended (sparsely) and resize2fs grows the file system into
// it. It is meant for a sandbox's own copy (see Clone), before the guest
// mounts it; the store's base files are never grown. A size below the
// file's is refused; the same size does nothing.
func Grow(ctx context.Context, path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("grow root filesystem: %w", err)
	}
	switch {
	case size < fi.Size():
		return errorf(ErrInvalid, "grow root filesystem %s to %d bytes: it is larger already (%d bytes): give a larger size", path, size, fi.Size())
	case size == fi.Size():
		return nil
	case size%4096 != 0:
		return errorf(ErrInvalid, "grow root filesystem %s: size %d is not a multiple of 4 KiB", path, size)
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("grow root filesystem %s: %w", path, err)
	}
	env := []string{"LC_ALL=C", "PATH=" + os.Getenv("PATH")}
	if err := runTool(ctx, env, "resize2fs", path); err != nil {
		// Give back the space; the file system is unchanged on failure.
		os.Truncate(path, fi.Size())
		return fmt.Errorf("grow root filesystem %s: %w", path, err)
	}
	return nil
}
