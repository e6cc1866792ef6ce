package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/kindling-vm/kindling/agent/internal/spec/filesystem"
	"github.com/kindling-vm/kindling/agent/internal/spec/filesystem/filesystemconnect"
)

type filesystemService struct{ s *Server }

var _ filesystemconnect.FilesystemHandler = (*filesystemService)(nil)

// path resolves a request path for the request's user.
func (fsv *filesystemService) path(h http.Header, p string) (string, *account, error) {
	acct, err := fsv.s.account(h)
	if err != nil {
		return "", nil, err
	}
	resolved, err := resolvePath(p, acct, "")
	if err != nil {
		return "", nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	return resolved, acct, nil
}

// fsError turns a file system error into a Connect error.
func fsError(what string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("%s: %w", what, err))
	case errors.Is(err, fs.ErrExist):
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s: %w", what, err))
	case errors.Is(err, fs.ErrPermission):
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s: %w", what, err))
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTEMPTY):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %w", what, err))
	default:
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: %w", what, err))
	}
}

// entryInfo describes the file at path, without following a final link.
func entryInfo(path string) (*pb.EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fsError("stat "+path, err)
	}
	return entryOf(path, fi), nil
}

func entryOf(path string, fi fs.FileInfo) *pb.EntryInfo {
	e := &pb.EntryInfo{
		Name:         fi.Name(),
		Path:         path,
		Size:         fi.Size(),
		Mode:         uint32(fi.Mode().Perm()),
		Permissions:  fi.Mode().String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = pb.FileType_FILE_TYPE_SYMLINK
		if t, err := os.Readlink(path); err == nil {
			e.SymlinkTarget = &t
		}
	case fi.IsDir():
		e.Type = pb.FileType_FILE_TYPE_DIRECTORY
	default:
		e.Type = pb.FileType_FILE_TYPE_FILE
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = strconv.FormatUint(uint64(st.Uid), 10)
		if u, err := user.LookupId(e.Owner); err == nil {
			e.Owner = u.Username
		}
		e.Group = strconv.FormatUint(uint64(st.Gid), 10)
		if g, err := user.LookupGroupId(e.Group); err == nil {
			e.Group = g.Name
		}
	}
	return e
}

// Stat describes one file.
func (fsv *filesystemService) Stat(_ context.Context, req *connect.Request[pb.StatRequest]) (*connect.Response[pb.StatResponse], error) {
	p, _, err := fsv.path(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	e, err := entryInfo(p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StatResponse{Entry: e}), nil
}

// ListDir lists a directory down to depth levels (0 means 1), without
// following links.
func (fsv *filesystemService) ListDir(_ context.Context, req *connect.Request[pb.ListDirRequest]) (*connect.Response[pb.ListDirResponse], error) {
	root, _, err := fsv.path(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	depth := int(req.Msg.GetDepth())
	if depth == 0 {
		depth = 1
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fsError("list "+root, err)
	}
	if !fi.IsDir() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("list %s: not a directory", root))
	}
	res := &pb.ListDirResponse{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if p == root {
			return err
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		level := strings.Count(rel, string(filepath.Separator)) + 1
		if level > depth {
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		res.Entries = append(res.Entries, entryOf(p, info))
		if d.IsDir() && level == depth {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fsError("list "+root, err)
	}
	return connect.NewResponse(res), nil
}

// MakeDir creates a directory and its parents, owned by the request's
// user. An existing directory is AlreadyExists.
func (fsv *filesystemService) MakeDir(_ context.Context, req *connect.Request[pb.MakeDirRequest]) (*connect.Response[pb.MakeDirResponse], error) {
	p, acct, err := fsv.path(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(p); err == nil {
		if fi.IsDir() {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("mkdir %s: directory already exists", p))
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("mkdir %s: exists and is not a directory", p))
	}
	if err := ensureDirs(p, acct); err != nil {
		return nil, fsError("mkdir "+p, err)
	}
	e, err := entryInfo(p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.MakeDirResponse{Entry: e}), nil
}

// ensureDirs creates dir and missing parents, giving each one it creates
// to the account.
func ensureDirs(dir string, acct *account) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := chown(d, acct); err != nil {
			return err
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
	}
	return nil
}

// chown gives path to the account when the agent may (it is root).
func chown(path string, acct *account) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return os.Lchown(path, int(acct.uid), int(acct.gid))
}

// Move renames a file or directory, creating the destination's parents.
func (fsv *filesystemService) Move(_ context.Context, req *connect.Request[pb.MoveRequest]) (*connect.Response[pb.MoveResponse], error) {
	src, acct, err := fsv.path(req.Header(), req.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	dst, _, err := fsv.path(req.Header(), req.Msg.GetDestination())
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, fsError("move "+src, err)
	}
	if err := ensureDirs(filepath.Dir(dst), acct); err != nil {
		return nil, fsError("move to "+dst, err)
	}
	if err := os.Rename(src, dst); err != nil {
		return nil, fsError("move "+src+" to "+dst, err)
	}
	e, err := entryInfo(dst)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.MoveResponse{Entry: e}), nil
}

// Remove removes a file, or a directory with everything in it.
func (fsv *filesystemService) Remove(_ context.Context, req *connect.Request[pb.RemoveRequest]) (*connect.Response[pb.RemoveResponse], error) {
	p, _, err := fsv.path(req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(p); err != nil {
		return nil, fsError("remove "+p, err)
	}
	if err := os.RemoveAll(p); err != nil {
		return nil, fsError("remove "+p, err)
	}
	return connect.NewResponse(&pb.RemoveResponse{}), nil
}
