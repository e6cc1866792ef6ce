package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Version is the version of the state file format this package writes.
// Files with a higher version are refused with a *TooNewError; older ones
// are read (their data's decoder converts what changed). Version 2: the
// VMM configuration inside a sandbox's record has explicit snake_case keys
// (version 1 used the Go field names; see vmm.Config). Version 3: a
// sandbox's record may hold its CNI networks, published ports and
// network record (new keys only).
const Version = 3

// File names inside a sandbox directory.
const (
	stateFile = "state.json"
	// tempPrefix starts the name of a state file being written. Such a file
	// is never read; one that outlives its writer is removed by Clean.
	tempPrefix = "." + stateFile + ".tmp-"
)

// maxStateSize bounds how much of a state file Load reads; anything larger
// is reported as corrupt rather than read into memory.
const maxStateSize = 16 << 20

// envelope is the on-disk form of a state file.
type envelope struct {
	Version int `json:"version"`
	Data    any `json:"data"`
}

// encodeState marshals v into a versioned envelope.
func encodeState(v any) ([]byte, error) {
	b, err := json.MarshalIndent(envelope{Version: Version, Data: v}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(b, '\n'), nil
}

// decodeState decodes the content b of the state file at path into v. A
// malformed file gives a *CorruptError, a newer version a *TooNewError; an
// error of the caller's (v not a non-nil pointer) is returned as is.
func decodeState(path string, b []byte, v any) error {
	var env struct {
		Version *int            `json:"version"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		if len(b) == 0 {
			err = errors.New("empty file")
		}
		return &CorruptError{Path: path, Err: err}
	}
	switch {
	case env.Version == nil:
		return &CorruptError{Path: path, Err: errors.New(`no "version" field`)}
	case *env.Version < 1:
		return &CorruptError{Path: path, Err: fmt.Errorf("invalid version %d", *env.Version)}
	case *env.Version > Version:
		return &TooNewError{Path: path, Version: *env.Version}
	case env.Data == nil:
		return &CorruptError{Path: path, Err: errors.New(`no "data" field`)}
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		if _, ok := errors.AsType[*json.InvalidUnmarshalError](err); ok {
			return fmt.Errorf("decode state: %w", err)
		}
		return &CorruptError{Path: path, Err: err}
	}
	return nil
}

// readState reads and decodes the state file in dir into v. A missing file
// gives an error matching ErrNotFound.
func readState(dir string, v any) error {
	_, err := readStateStamped(dir, v)
	return err
}

// readStateStamped is readState, also returning the stamp of the file it
// read (zero when it is not settled: see Stamp).
func readStateStamped(dir string, v any) (Stamp, error) {
	path := filepath.Join(dir, stateFile)
	// O_NONBLOCK: a FIFO planted as the state file must not hang the read.
	f, err := OpenInDir("sandbox directory", dir, stateFile, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Lstat(dir); derr == nil {
			return Stamp{}, fmt.Errorf("%w: no state file yet (its create did not finish)", ErrNotFound)
		}
		return Stamp{}, ErrNotFound
	}
	if err != nil {
		return Stamp{}, fmt.Errorf("read state: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return Stamp{}, &CorruptError{Path: path, Err: errors.New("not a regular file")}
	}
	var stamp Stamp
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		stamp = settledStamp(st, time.Now())
	}
	b, err := ReadLimited(f, path, maxStateSize)
	if tl, ok := errors.AsType[*TooLargeError](err); ok {
		return Stamp{}, &CorruptError{Path: path, Err: tl}
	}
	if err != nil {
		return Stamp{}, fmt.Errorf("read state: %w", err)
	}
	return stamp, decodeState(path, b, v)
}

// Stamp tells one version of a state file from another without reading
// it: the file's device, inode, size and change times. The store never
// writes a state file in place, it renames a new file over it, so every
// save makes a new inode, and an edit in place changes the times.
//
// One case could fool it: a file saved, replaced, and saved again into the
// first one's freed inode within one tick of the kernel's file clock, at
// the same size. So a stamp is only given for a file whose last change is
// older than stampSettle when it is read ("settled"): any later version
// is then written after the read, at a later time. A version read sooner
// gets the zero Stamp, which matches no file, so it is read again.
type Stamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
}

// stampSettle is how long after its last change a file's stamp is
// trusted: well above the kernel's file clock tick (at most 10 ms).
const stampSettle = 100 * time.Millisecond

// IsZero reports whether s is the zero Stamp: no version known.
func (s Stamp) IsZero() bool { return s == Stamp{} }

// stampOf is the stamp of the file st describes.
func stampOf(st *syscall.Stat_t) Stamp {
	return Stamp{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// settledStamp is the stamp of the file st describes, read at now; zero
// when the file changed less than stampSettle before.
func settledStamp(st *syscall.Stat_t, now time.Time) Stamp {
	s := stampOf(st)
	if now.UnixNano()-max(s.mtime, s.ctime) < int64(stampSettle) {
		return Stamp{}
	}
	return s
}

// writeState encodes v and replaces the state file in dir atomically: a
// temporary file in dir is written, synced and renamed over state.json, and
// dir is synced. On any error the old state file is untouched and the
// temporary file is removed. A missing dir gives an error matching
// ErrNotFound.
func writeState(dir string, v any) error {
	b, err := encodeState(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, stateFile, b)
}

// WriteFileAtomic replaces the file name in dir with b, atomically and
// durably: a temporary file in dir (mode 0600) is written, synced and
// renamed over name, and dir is synced. After a crash the file holds
// either its old content or b. On any error the old file is untouched and
// the temporary file is removed. A missing dir gives an error matching
// ErrNotFound. It is the one atomic write of kindling: the state files,
// snapshot manifests and template manifests are all written with it.
func WriteFileAtomic(dir, name string, b []byte) error {
	return writeFileAtomic(dir, name, b)
}

func writeFileAtomic(dir, name string, b []byte) (err error) {
	prefix := "." + name + ".tmp-"
	if name == stateFile {
		prefix = tempPrefix
	}
	f, err := os.CreateTemp(dir, prefix+"*") // mode 0600
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close() // may be closed already; the write error is what matters
			if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("remove temporary file: %w", rerr))
			}
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		// The new content is in place; only its durability is in doubt.
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// syncDir fsyncs a directory so that entries created, renamed or removed in
// it survive a crash of the host.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %q: %w", dir, err)
	}
	return nil
}

// isTemp reports whether name is a temporary state file.
func isTemp(name string) bool { return strings.HasPrefix(name, tempPrefix) }

// SyncDir fsyncs the directory dir, so that entries created, renamed or
// removed in it survive a crash of the host: for the other stores kept
// beside the sandboxes' (images, templates), so the tree has one discipline.
func SyncDir(dir string) error { return syncDir(dir) }
