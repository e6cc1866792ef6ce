package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// explain adds the hint of an error's kind, chosen by the command, and
// leaves usage errors and errors of no kind alone.
func TestExplain(t *testing.T) {
	tests := []struct {
		args []string
		err  error
		want string
	}{
		{[]string{"inspect", "web"}, fmt.Errorf("sandbox %q: %w", "web", sandbox.ErrNotFound), `sandbox "web": not found: see 'kindling ps -a'`},
		{[]string{"rm", "web"}, fmt.Errorf("remove: %w", sandbox.ErrInvalidState), `remove: invalid state: stop it first, or use --force`},
		{[]string{"run", "--name", "web"}, fmt.Errorf("sandbox %q: %w", "web", sandbox.ErrExists), `sandbox "web": already exists: pick another --name or remove it with 'kindling rm web'`},
		{[]string{"template", "rm", "base"}, fmt.Errorf("template: %w", template.ErrNotFound), `template: not found: see 'kindling template ls'`},
		{[]string{"template", "create", "base", "--from", "src"}, fmt.Errorf("x: %w", sandbox.ErrExists), `x: already exists: pick another name or remove it with 'kindling template rm base'`},
		{[]string{"run", "--template", "base"}, fmt.Errorf("t: %w", template.ErrCorrupt), `t: template corrupt: check it with 'kindling template verify base'`},
		{[]string{"create"}, fmt.Errorf("spec: %w", sandbox.ErrNoFirecracker), `spec: no firecracker executable found: give --firecracker PATH, set KINDLING_FIRECRACKER, put firecracker on PATH, or run 'kindling install firecracker'`},
		{[]string{"stop", "web"}, errors.New("no kind"), `no kind`},
		{[]string{"ps"}, usageErrorf("kindling ps", "bad: %w", sandbox.ErrNotFound), `bad: not found: run 'kindling ps --help'`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			root := newRootCommand(io.Discard, io.Discard)
			cmd, rest, err := root.Find(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Fatal(err)
			}
			got := explain(cmd, tt.err)
			if got.Error() != tt.want {
				t.Errorf("explain = %q, want %q", got, tt.want)
			}
			if !errors.Is(got, tt.err) && got != tt.err {
				t.Errorf("explain lost the error: %v", got)
			}
			if code := exitCode(got, io.Discard); code != exitFailure && !strings.HasPrefix(tt.want, "bad") {
				t.Errorf("exit status %d, want %d", code, exitFailure)
			}
		})
	}
}
