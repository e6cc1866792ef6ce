package server_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// A server that was killed during a template build left the builder
// running: the next server on the root removes it, and leaves a builder
// whose build still runs.
func TestNewRemovesKilledBuilders(t *testing.T) {
	r := newRig(t, server.Config{})
	ctx := context.Background()
	// No process has PID 4194305 (above the kernel's largest pid_max);
	// a builder without an owner label cannot be told gone.
	for id, labels := range map[string]map[string]string{
		"killedbuild": {template.LabelBuild: "t1", template.LabelBuildOwner: "4194305:1"},
		"livebuild":   {template.LabelBuild: "t2"},
	} {
		spec := r.idleSpec(id)
		spec.Labels = labels
		_, err := r.rt.Create(ctx, spec, sandbox.CreateOptions{})
		must(t, err)
		_, err = r.rt.Start(ctx, id)
		must(t, err)
	}
	s2, err := server.New(ctx, server.Config{Runtime: r.rt, Templates: r.tpl})
	must(t, err)
	defer s2.Close()
	if _, err := r.rt.Inspect(ctx, "killedbuild"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the builder of a killed build is still there after a server start: %v", err)
	}
	if _, err := r.rt.Inspect(ctx, "livebuild"); err != nil {
		t.Errorf("a builder whose owner cannot be told gone was removed: %v", err)
	}
	must(t, r.rt.Remove(ctx, "livebuild", true))
}
