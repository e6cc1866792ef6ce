package unix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// POSIX access ACLs, as Linux stores them in the system.posix_acl_access
// extended attribute: a little-endian version (2), then 8-byte entries of
// tag (u16), permission bits (u16) and id (u32), sorted by tag, then id.
const (
	aclXattr   = "system.posix_acl_access"
	aclVersion = 2

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclUndefinedID = 0xffffffff
)

type aclEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

// ACL permission bits for GrantUserACL.
const (
	ACLRead  = 4
	ACLWrite = 2
)

// GrantUserACL adds (or replaces) an access ACL entry giving uid the
// permission bits perm on path, and recomputes the ACL's mask as the union
// of the group class, as setfacl does. The file's owner, group and other
// bits are left as they are. It needs a filesystem with POSIX ACLs.
func GrantUserACL(path string, uid int, perm uint16) error {
	acl, err := readACL(path)
	if err != nil {
		return err
	}
	acl = slices.DeleteFunc(acl, func(e aclEntry) bool { return e.tag == aclUser && e.id == uint32(uid) })
	acl = append(acl, aclEntry{tag: aclUser, perm: perm, id: uint32(uid)})
	return writeACL(path, acl)
}

// RevokeUserACL removes the access ACL entry of uid from path, if there is
// one; with no named entry left the ACL becomes the file's mode again. A
// missing file is not an error.
func RevokeUserACL(path string, uid int) error {
	acl, err := readACL(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	n := len(acl)
	acl = slices.DeleteFunc(acl, func(e aclEntry) bool { return e.tag == aclUser && e.id == uint32(uid) })
	if len(acl) == n {
		return nil
	}
	return writeACL(path, acl)
}

// HasUserACL reports whether path's access ACL has an entry for uid.
func HasUserACL(path string, uid int) (bool, error) {
	acl, err := readACL(path)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(acl, func(e aclEntry) bool { return e.tag == aclUser && e.id == uint32(uid) }), nil
}

// readACL returns path's access ACL: the stored one, or the one its mode
// stands for when it has none.
func readACL(path string) ([]aclEntry, error) {
	buf := make([]byte, 512)
	for {
		n, err := unix.Getxattr(path, aclXattr, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENODATA) {
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				return nil, &os.PathError{Op: "stat", Path: path, Err: err}
			}
			m := uint16(st.Mode)
			return []aclEntry{
				{tag: aclUserObj, perm: m >> 6 & 7, id: aclUndefinedID},
				{tag: aclGroupObj, perm: m >> 3 & 7, id: aclUndefinedID},
				{tag: aclOther, perm: m & 7, id: aclUndefinedID},
			}, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "read ACL", Path: path, Err: err}
		}
		return decodeACL(path, buf[:n])
	}
}

func decodeACL(path string, b []byte) ([]aclEntry, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclVersion {
		return nil, fmt.Errorf("read ACL of %s: unknown format (%d bytes)", path, len(b))
	}
	var acl []aclEntry
	for p := b[4:]; len(p) > 0; p = p[8:] {
		acl = append(acl, aclEntry{
			tag:  binary.LittleEndian.Uint16(p),
			perm: binary.LittleEndian.Uint16(p[2:]),
			id:   binary.LittleEndian.Uint32(p[4:]),
		})
	}
	return acl, nil
}

// writeACL sorts acl, sets its mask (present exactly when there are named
// entries) and stores it.
func writeACL(path string, acl []aclEntry) error {
	acl = slices.DeleteFunc(acl, func(e aclEntry) bool { return e.tag == aclMask })
	var mask uint16
	named := false
	for _, e := range acl {
		switch e.tag {
		case aclUser, aclGroup:
			named = true
			mask |= e.perm
		case aclGroupObj:
			mask |= e.perm
		}
	}
	if named {
		acl = append(acl, aclEntry{tag: aclMask, perm: mask, id: aclUndefinedID})
	}
	slices.SortFunc(acl, func(a, b aclEntry) int {
		if a.tag != b.tag {
			return int(a.tag) - int(b.tag)
		}
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	b := make([]byte, 4, 4+8*len(acl))
	binary.LittleEndian.PutUint32(b, aclVersion)
	for _, e := range acl {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	if err := unix.Setxattr(path, aclXattr, b, 0); err != nil {
		return &os.PathError{Op: "set ACL", Path: path, Err: err}
	}
	return nil
}
