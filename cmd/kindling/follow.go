package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// followPoll is how often a followed log is checked for new output.
const followPoll = 25 * time.Millisecond

// copyLog copies a bounded log to w, oldest part first: path.1 (the part
// rotated out), then path. Missing files are skipped.
func copyLog(path string, w io.Writer) error {
	for _, p := range []string{path + ".1", path} {
		if err := copyFile(p, w); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(path string, w io.Writer) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// followLog copies the bounded log at path to w like copyLog, then keeps
// copying what is appended to it, across rotations (path renamed to path.1
// and a new path started), until done is closed — then it copies what is
// left and returns — or ctx ends. A log that does not exist yet is waited
// for; one removed meanwhile is read to its end through the open file.
func followLog(ctx context.Context, path string, w io.Writer, done <-chan struct{}) error {
	if err := copyFile(path+".1", w); err != nil {
		return err
	}
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	last := false
	for {
		if f == nil {
			nf, err := os.Open(path)
			switch {
			case err == nil:
				f = nf
			case !errors.Is(err, fs.ErrNotExist):
				return fmt.Errorf("follow %s: %w", path, err)
			}
		}
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return fmt.Errorf("follow %s: %w", path, err)
			}
			if replaced(f, path) {
				// Rotated (or removed): finish the old file, then go on
				// with the new one at once.
				if _, err := io.Copy(w, f); err != nil {
					return fmt.Errorf("follow %s: %w", path, err)
				}
				f.Close()
				f = nil
				if _, err := os.Stat(path); err == nil {
					continue
				}
			}
		}
		if last {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			last = true
		case <-tick.C:
		}
	}
}

// replaced reports whether path no longer names the open file f.
func replaced(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	pi, err := os.Stat(path)
	if err != nil {
		return true
	}
	return !os.SameFile(fi, pi)
}
