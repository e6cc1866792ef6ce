package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kindling-vm/kindling/sandbox/remote"
	"github.com/kindling-vm/kindling/template"
)

// hostTemplateRunFlags are the flags of 'run --template' a server takes
// (the clone's own network and Firecracker are not in its API).
var hostTemplateRunFlags = map[string]bool{
	"template": true, "verify-template": true, "name": true, "label": true,
	"rm": true, "detach": true, "json": true, "format": true, "timeout": true, "root": true, "debug": true, "host": true,
}

// runTemplateOnHost is 'run --template NAME' through the server --host
// names: a plain run (no name, labels or --rm) is served from the
// template's warm pool when it has a clone ready.
func runTemplateOnHost(ctx context.Context, a *app, cmd *cobra.Command, name string, o template.CloneOptions, timeout time.Duration, detach, asJSON, rm bool) error {
	var bad []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if !hostTemplateRunFlags[f.Name] {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		sort.Strings(bad)
		return usageErrorf(cmd.CommandPath(), "%s cannot go with --template through a server (--host): the template fixes the machine", strings.Join(bad, ", "))
	}
	c, err := a.controller()
	if err != nil {
		return err
	}
	rc := c.(*remote.Client)
	defer rc.Close()
	sctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	info, err := rc.RunTemplate(sctx, name, o)
	if err != nil {
		if ctx.Err() == nil && sctx.Err() != nil {
			return fmt.Errorf("run --template %s: no answer within --timeout %v: %w", name, timeout, err)
		}
		return err
	}
	return afterStart(ctx, a, rc, info, detach, asJSON, rm)
}
