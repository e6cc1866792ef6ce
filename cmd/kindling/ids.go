package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/kindling-vm/kindling/sandbox"
)

// sandboxLister is what resolveID needs of the runtime; a local
// *sandbox.Runtime and a remote sandbox.Controller both have it.
type sandboxLister interface {
	Inspect(ctx context.Context, id string) (sandbox.Info, error)
	List(ctx context.Context, o sandbox.ListOptions) ([]sandbox.Info, error)
}

// resolveID turns what a user typed for a sandbox into its ID, as docker
// does: the ID itself, or a prefix that only one sandbox's ID starts with.
// A prefix several IDs start with is an error naming them; one no ID starts
// with is returned unchanged, so that the runtime reports it as not found.
func resolveID(ctx context.Context, rt sandboxLister, arg string) (string, error) {
	if arg == "" {
		return arg, nil
	}
	if _, err := rt.Inspect(ctx, arg); !errors.Is(err, sandbox.ErrNotFound) {
		return arg, nil // the ID itself (or an error the runtime will repeat)
	}
	infos, err := rt.List(ctx, sandbox.ListOptions{})
	if err != nil {
		return "", err
	}
	var ids []string
	for _, in := range infos {
		if strings.HasPrefix(in.ID, arg) {
			ids = append(ids, in.ID)
		}
	}
	switch len(ids) {
	case 0:
		return arg, nil
	case 1:
		return ids[0], nil
	}
	sort.Strings(ids)
	return "", fmt.Errorf("sandbox ID prefix %q is ambiguous: it matches %s: give more of the ID", arg, strings.Join(ids, ", "))
}

// sandboxID opens the runtime and resolves arg with resolveID.
func (a *app) sandboxID(ctx context.Context, arg string, extra ...sandbox.Option) (sandbox.Controller, string, error) {
	rt, err := a.controller(extra...)
	if err != nil {
		return nil, "", err
	}
	id, err := resolveID(ctx, rt, arg)
	if err != nil {
		return nil, "", err
	}
	return rt, id, nil
}

// hotplugID is sandboxID for the drive commands: the controller's drive
// hotplug and the resolved ID.
func (a *app) hotplugID(ctx context.Context, arg string) (sandbox.Hotplugger, string, error) {
	c, id, err := a.sandboxID(ctx, arg)
	if err != nil {
		return nil, "", err
	}
	h, ok := c.(sandbox.Hotplugger)
	if !ok {
		return nil, "", fmt.Errorf("drive hotplug: %w", sandbox.ErrNotSupported)
	}
	return h, id, nil
}

// localSandboxID is sandboxID for the commands that work on this host's
// state root only (threads, template create): the local runtime.
func (a *app) localSandboxID(ctx context.Context, arg string) (*sandbox.Runtime, string, error) {
	rt, err := a.runtime()
	if err != nil {
		return nil, "", err
	}
	id, err := resolveID(ctx, rt, arg)
	if err != nil {
		return nil, "", err
	}
	return rt, id, nil
}
