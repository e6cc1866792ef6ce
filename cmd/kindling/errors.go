package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kindling-vm/kindling/internal/preflight"
	"github.com/kindling-vm/kindling/sandbox"
)

// The library's errors state facts ("sandbox "web": already exists"); this
// file is the one place where the CLI turns their kind into what a person
// should do about it and into an exit status. The kind is read from the
// error with errors.Is against the sandbox package's sentinels (kindling's
// one set, internal/errdefs), never from its text.

// errorKind is one of kindling's kinds of failure, as the CLI treats it.
type errorKind struct {
	sentinel error
	code     int
	// hint returns what to do about a failure of this kind in command
	// path ("kindling rm"), or "" when there is nothing to add.
	hint func(path string, c *cobra.Command) string
}

// errorKinds are checked in order; the first that matches decides. Every
// kind exits with status 1 today (usage mistakes exit with 2 and are told
// apart before the library is called); the status lives here so that a
// kind can be given its own without touching the commands.
var errorKinds = []errorKind{
	{sandbox.ErrNoFirecracker, exitFailure, func(string, *cobra.Command) string {
		return "give --firecracker PATH, set " + sandbox.EnvFirecracker + ", put firecracker on PATH, or run 'kindling install firecracker'"
	}},
	{sandbox.ErrNotFound, exitFailure, notFoundHint},
	{sandbox.ErrExists, exitFailure, existsHint},
	{sandbox.ErrCorrupt, exitFailure, corruptHint},
	{sandbox.ErrConflict, exitFailure, conflictHint},
	{sandbox.ErrInvalid, exitFailure, nil},
	{sandbox.ErrNotSupported, exitFailure, nil},
	{sandbox.ErrUnavailable, exitFailure, nil},
}

func notFoundHint(path string, c *cobra.Command) string {
	switch {
	case strings.HasPrefix(path, "kindling install"), strings.HasPrefix(path, "kindling uninstall"),
		strings.HasPrefix(path, "kindling image"):
		// internal/install's and image's errors name their own remedy
		// (a mirror, --version, 'kindling image ls').
		return ""
	case path == "kindling template create" && flagValue(c, "image") != "":
		return "" // the image's error names its remedy ('kindling image ls')
	case path == "kindling template create": // the source sandbox
		return "see 'kindling ps'"
	case strings.HasPrefix(path, "kindling template"), flagValue(c, "template") != "":
		return "see 'kindling template ls'"
	case path == "kindling drive rm":
		if args := c.Flags().Args(); len(args) > 0 {
			return fmt.Sprintf("see 'kindling inspect %s'", args[0])
		}
	}
	return "see 'kindling ps -a'"
}

func existsHint(path string, c *cobra.Command) string {
	switch path {
	case "kindling run", "kindling create", "kindling restore":
		if name := flagValue(c, "name"); name != "" {
			return fmt.Sprintf("pick another --name or remove it with 'kindling rm %s'", name)
		}
		return "pick another --name"
	case "kindling template create":
		if args := c.Flags().Args(); len(args) > 0 {
			return fmt.Sprintf("pick another name or remove it with 'kindling template rm %s'", args[0])
		}
		return "pick another name"
	case "kindling snapshot":
		return "choose an empty directory"
	}
	return ""
}

func conflictHint(path string, _ *cobra.Command) string {
	switch path {
	case "kindling rm":
		return "stop it first, or use --force"
	case "kindling template rm":
		return "remove them first, or use --force"
	case "kindling template create":
		return "detach hotplugged drives first ('kindling drive rm')"
	}
	return ""
}

func corruptHint(path string, c *cobra.Command) string {
	switch {
	case flagValue(c, "template") != "":
		return fmt.Sprintf("check it with 'kindling template verify %s'", flagValue(c, "template"))
	case path == "kindling rm":
		return "use --force to kill what still runs and remove it"
	}
	return ""
}

// explain returns err with the hint its kind calls for in command c, and the
// exit status for it. Usage mistakes and explicit statuses pass unchanged.
func explain(c *cobra.Command, err error) error {
	if err == nil || c == nil {
		return err
	}
	var u *usageError
	var e *exitStatusError
	var p *preflight.Error
	if errors.As(err, &u) || errors.As(err, &e) || errors.As(err, &p) {
		return err // a preflight failure names its own fix
	}
	for _, k := range errorKinds {
		if !errors.Is(err, k.sentinel) {
			continue
		}
		h := ""
		if k.hint != nil {
			h = k.hint(c.CommandPath(), c)
		}
		if h == "" && k.code == exitFailure {
			return err
		}
		return &hintedError{err: err, hint: h, code: k.code}
	}
	return err
}

// hintedError is a library error with the CLI's hint for it.
type hintedError struct {
	err  error
	hint string
	code int
}

func (h *hintedError) Error() string {
	if h.hint == "" {
		return h.err.Error()
	}
	return h.err.Error() + ": " + h.hint
}

func (h *hintedError) Unwrap() error { return h.err }

// flagValue is the value of c's flag name, "" when c has no such flag.
func flagValue(c *cobra.Command, name string) string {
	if f := c.Flags().Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
