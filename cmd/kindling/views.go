package main

import (
	"strings"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// The CLI spells a few things one way in every command's text and JSON,
// whatever the library or the file on disk holds: a Firecracker release as
// "v1.14.2" (as 'kindling version' and the release names do), and a
// machine's vCPUs and memory as the values it runs with, never 0 for "the
// default" (in text, memory as "128MiB"). docs/cli.md documents the shapes.

// releaseName spells a Firecracker release as "v1.14.2".
func releaseName(v string) string {
	if v == "" || strings.HasPrefix(v, "v") {
		return v
	}
	return "v" + v
}

// sandboxView is a sandbox as the CLI prints it.
func sandboxView(in sandbox.Info) sandbox.Info {
	in.FirecrackerVersion = releaseName(in.FirecrackerVersion)
	if in.Spec.VCPUs == 0 {
		in.Spec.VCPUs = defaultCPUs
	}
	if in.Spec.MemoryMiB == 0 {
		in.Spec.MemoryMiB = defaultMemoryMiB
	}
	return in
}

// sandboxViews is sandboxView of each of infos, never nil.
func sandboxViews(infos []sandbox.Info) []sandbox.Info {
	out := make([]sandbox.Info, len(infos))
	for i, in := range infos {
		out[i] = sandboxView(in)
	}
	return out
}

// templateView is a template as the CLI prints it.
func templateView(t template.Template) template.Template {
	t.Firecracker = releaseName(t.Firecracker)
	if t.VCPUs == 0 {
		t.VCPUs = defaultCPUs
	}
	if t.MemoryMiB == 0 {
		t.MemoryMiB = defaultMemoryMiB
	}
	return t
}

// templateViews is templateView of each of list, never nil.
func templateViews(list []template.Template) []template.Template {
	out := make([]template.Template, len(list))
	for i, t := range list {
		out[i] = templateView(t)
	}
	return out
}
