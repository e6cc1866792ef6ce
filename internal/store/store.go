package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Root defaults.
const (
	// EnvRoot is the environment variable that overrides the default root.
	EnvRoot = "KINDLING_ROOT"
	// DefaultRootDir is the root used when EnvRoot is unset or empty.
	DefaultRootDir = "/run/kindling"
)

// locksDir holds the lock files, one per sandbox ID. Its leading '.' keeps it
// apart from sandbox directories: no valid ID starts with '.'.
const locksDir = ".locks"

// DefaultRoot returns the state root to use when none was given on the
// command line: $KINDLING_ROOT if set and not empty, else /run/kindling.
func DefaultRoot() string {
	if r := os.Getenv(EnvRoot); r != "" {
		return r
	}
	return DefaultRootDir
}

// Store is a state root on disk. Its methods are safe for concurrent use by
// goroutines and processes: per-sandbox locks are flocks on files under the
// root, so they serialise commands across processes too.
type Store struct {
	root string // absolute path of the root directory; immutable
}

// Open opens the state root at root, creating it (mode 0700) and its lock
// directory if they are missing. Both must be private to the invoking
// user (CheckPrivateDir): a root another user owns or can write is
// refused with an error matching ErrNotPrivate that says how to fix it.
// A symlink naming the root is resolved once, here.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("open state root: empty path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open state root %q: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open state root %q: %w", root, err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("open state root %q: %w", root, err)
	}
	if err := CheckPrivateDir("state root", abs); err != nil {
		return nil, err
	}
	if err := MkdirPrivate("lock directory", filepath.Join(abs, locksDir)); err != nil {
		return nil, err
	}
	return &Store{root: abs}, nil
}

// OpenFile opens the file name in sandbox id's directory without following
// a symlink, and only if the directory is private (see OpenInDir). It
// takes no lock.
func (s *Store) OpenFile(id, name string, flag int, perm os.FileMode) (*os.File, error) {
	if err := ValidateID(id); err != nil {
		return nil, opError("open", id, err)
	}
	return OpenInDir("sandbox directory", s.dir(id), name, flag, perm)
}

// Root returns the absolute path of the state root.
func (s *Store) Root() string { return s.root }

// HoldsSandboxes reports whether the state root root has a sandbox
// directory (or one being created): an entry that is a directory and not
// hidden. Files a server keeps there (its socket, its lock) do not count.
// A root that cannot be read counts as holding some.
func HoldsSandboxes(root string) bool {
	ents, err := os.ReadDir(root)
	if err != nil {
		return true
	}
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			return true
		}
	}
	return false
}

// Dir returns the directory of sandbox id, <root>/<id>, where the runtime
// keeps the sandbox's sockets, logs and console next to its state. It checks
// the ID, not that the sandbox exists.
func (s *Store) Dir(id string) (string, error) {
	if err := ValidateID(id); err != nil {
		return "", err
	}
	return s.dir(id), nil
}

func (s *Store) dir(id string) string { return filepath.Join(s.root, id) }

// Create makes sandbox id with v as its first state. If the ID is taken, even
// by a create that never finished, the error matches ErrExists; of several
// creates of one ID, in any processes, exactly one succeeds. ctx bounds the
// wait for the sandbox's lock. On error nothing is left behind.
func (s *Store) Create(ctx context.Context, id string, v any) error {
	l, err := s.CreateLocked(ctx, id, v)
	if err != nil {
		return err
	}
	l.Unlock()
	return nil
}

// CreateLocked is Create, returning with the new sandbox still locked, so
// that the caller can finish setting it up before any other command sees it
// unlocked. The caller must Unlock it.
func (s *Store) CreateLocked(ctx context.Context, id string, v any) (*Locked, error) {
	l, err := s.create(ctx, id, v)
	if err != nil {
		return nil, opError("create", id, err)
	}
	return l, nil
}

func (s *Store) create(ctx context.Context, id string, v any) (_ *Locked, err error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	b, err := encodeState(v) // refuse an unencodable value before touching the disk
	if err != nil {
		return nil, err
	}
	// The lock comes first: a directory without a state file and without a
	// holder is then always the remains of a crashed create.
	l, err := s.lock(ctx, id, true)
	if err != nil {
		return nil, err
	}
	dir := s.dir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		l.drop = !errors.Is(err, os.ErrExist) // the lock file guards nothing
		l.Unlock()
		if errors.Is(err, os.ErrExist) {
			if _, serr := os.Stat(filepath.Join(dir, stateFile)); errors.Is(serr, os.ErrNotExist) {
				return nil, fmt.Errorf("%w (incomplete: an earlier create did not finish; gc removes it)", ErrExists)
			}
			return nil, ErrExists
		}
		return nil, fmt.Errorf("make sandbox directory: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := s.removeLocked(l); rerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
			l.Unlock()
		}
	}()
	if err := syncDir(s.root); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dir, stateFile, b); err != nil {
		return nil, err
	}
	return l, nil
}

// removeLocked removes l's sandbox directory, and has l.Unlock remove its
// lock file; the caller holds l.
func (s *Store) removeLocked(l *Locked) error {
	dir := s.dir(l.id)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrNotFound
		}
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	l.drop = true
	return syncDir(s.root)
}

// Load decodes the state of sandbox id into v, a non-nil pointer. It takes no
// lock: state files are replaced atomically, so it sees a whole state, the
// latest one saved. A sandbox whose create did not finish is not found.
func (s *Store) Load(id string, v any) error {
	if err := ValidateID(id); err != nil {
		return opError("load", id, err)
	}
	if err := readState(s.dir(id), v); err != nil {
		return opError("load", id, err)
	}
	return nil
}

// LoadStamped is Load, also returning the stamp of the state file it read:
// while Stamp(id) (or List's Entry.Stamp) gives the same, the file holds
// what v got. The stamp is zero for a file changed just now (see Stamp),
// which is then to be read again next time.
func (s *Store) LoadStamped(id string, v any) (Stamp, error) {
	if err := ValidateID(id); err != nil {
		return Stamp{}, opError("load", id, err)
	}
	stamp, err := readStateStamped(s.dir(id), v)
	if err != nil {
		return Stamp{}, opError("load", id, err)
	}
	return stamp, nil
}

// Stamp returns the stamp of sandbox id's state file as it is now, with
// one stat and no read; a missing file gives an error matching
// ErrNotFound. It never returns the zero Stamp without an error.
func (s *Store) Stamp(id string) (Stamp, error) {
	if err := ValidateID(id); err != nil {
		return Stamp{}, opError("stat", id, err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(s.dir(id), stateFile), &st); err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			return Stamp{}, opError("stat", id, ErrNotFound)
		}
		return Stamp{}, opError("stat", id, err)
	}
	return stampOf(&st), nil
}

// Update locks sandbox id, loads its state into v (a non-nil pointer), calls
// fn, which may change *v, and saves v if fn returns nil. fn's error is
// returned as is and nothing is saved.
func (s *Store) Update(ctx context.Context, id string, v any, fn func() error) error {
	l, err := s.Lock(ctx, id)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer l.Unlock()
	if err := l.Load(v); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := fn(); err != nil {
		return err
	}
	if err := l.Save(v); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}

// Remove locks sandbox id (waiting as long as ctx allows) and deletes its
// directory with everything in it. A missing sandbox gives ErrNotFound.
func (s *Store) Remove(ctx context.Context, id string) error {
	l, err := s.lockExisting(ctx, id, true)
	if err != nil {
		return opError("remove", id, err)
	}
	defer l.Unlock()
	return l.Remove()
}

// Entry is one sandbox directory found by List.
type Entry struct {
	ID  string // sandbox ID
	Dir string // sandbox directory
	// Incomplete is set when the directory has no state file: a create is
	// under way, or crashed before writing it (then Clean removes it).
	Incomplete bool
	// Stamp is the state file's stamp (as Store.Stamp) when it has one.
	Stamp Stamp
}

// List returns the sandboxes under the root, sorted by ID. It takes no lock,
// so a create or remove running meanwhile may or may not show. Names that
// are not valid IDs are not sandboxes and are skipped.
func (s *Store) List() ([]Entry, error) {
	des, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []Entry
	for _, de := range des {
		if !de.IsDir() || !validID(de.Name()) {
			continue
		}
		dir := s.dir(de.Name())
		var st syscall.Stat_t
		err := syscall.Lstat(filepath.Join(dir, stateFile), &st)
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("list sandboxes: %w", &os.PathError{Op: "lstat", Path: filepath.Join(dir, stateFile), Err: err})
		}
		e := Entry{ID: de.Name(), Dir: dir, Incomplete: err != nil}
		if err == nil {
			e.Stamp = stampOf(&st)
		}
		out = append(out, e)
	}
	return out, nil
}

// Clean removes what crashed store operations left behind, skipping every
// sandbox some command holds locked: the directories of creates that never
// wrote a state file, temporary state files, and lock files of sandboxes
// that no longer exist. It returns the paths it removed and carries on past
// errors, which it returns joined.
func (s *Store) Clean() ([]string, error) { return s.CleanExcept(nil) }

// CleanExcept is Clean, leaving alone the incomplete sandboxes for which
// keep (when not nil) returns true: the caller may know that something
// still uses such a directory.
func (s *Store) CleanExcept(keep func(id string) bool) ([]string, error) {
	ents, err := s.List()
	if err != nil {
		return nil, fmt.Errorf("clean: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if e.Incomplete && keep != nil && keep(e.ID) {
			continue
		}
		r, err := s.cleanOne(e.ID)
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, fmt.Errorf("clean sandbox %q: %w", e.ID, err))
		}
	}
	des, err := os.ReadDir(filepath.Join(s.root, locksDir))
	if err != nil {
		errs = append(errs, fmt.Errorf("clean: %w", err))
	}
	for _, de := range des {
		id := de.Name()
		if !validID(id) {
			continue
		}
		if _, err := os.Lstat(s.dir(id)); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		// lockExisting drops the lock file of a sandbox that does not exist.
		l, err := s.lockExisting(context.Background(), id, false)
		switch {
		case errors.Is(err, ErrNotFound):
			removed = append(removed, s.lockPath(id))
		case errors.Is(err, ErrLocked):
		case err != nil:
			errs = append(errs, fmt.Errorf("clean lock %q: %w", id, err))
		default:
			l.Unlock() // created meanwhile
		}
	}
	return removed, errors.Join(errs...)
}

// cleanOne removes sandbox id if it is incomplete, else its stale temporary
// files, unless the sandbox is locked.
func (s *Store) cleanOne(id string) ([]string, error) {
	l, err := s.lockExisting(context.Background(), id, false)
	if errors.Is(err, ErrLocked) || errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	dir := l.Dir()
	if _, err := os.Lstat(filepath.Join(dir, stateFile)); errors.Is(err, os.ErrNotExist) {
		if err := s.removeLocked(l); err != nil {
			return nil, err
		}
		return []string{dir}, nil
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, de := range des {
		if !isTemp(de.Name()) {
			continue
		}
		p := filepath.Join(dir, de.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}
