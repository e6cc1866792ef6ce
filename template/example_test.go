package template_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// firecracker is the firecracker executable the example runs: kindling's
// fake Firecracker under go test.
func firecracker() string {
	fc, err := testutil.BuildFakeFirecracker()
	if err != nil {
		log.Fatal(err)
	}
	return fc
}

// Make a template of a running sandbox, then start clones of it: each is a
// sandbox of its own that resumes the template's guest without booting.
func Example() {
	root, err := os.MkdirTemp("", "kx")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	rt, err := sandbox.Open(root)
	if err != nil {
		log.Fatal(err)
	}
	templates, err := template.Open(rt)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	spec := sandbox.Spec{ID: "base", Demo: sandbox.DemoIdle, Firecracker: firecracker(), MemoryMiB: 64}
	if _, err := rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		log.Fatal(err)
	}
	if _, err := rt.Start(ctx, "base"); err != nil {
		log.Fatal(err)
	}
	// With Stop the source ends once the template is made: the template
	// owns everything its clones need.
	tpl, err := templates.Create(ctx, "base", "base", template.Options{Stop: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := rt.Remove(ctx, "base", true); err != nil {
		log.Fatal(err)
	}
	fmt.Println("template", tpl.Name, "from", tpl.From)

	for _, id := range []string{"clone1", "clone2"} {
		in, err := templates.Run(ctx, "base", template.CloneOptions{ID: id, Firecracker: firecracker()})
		if err != nil {
			log.Fatal(err)
		}
		defer rt.Remove(ctx, id, true)
		fmt.Println(in.ID, in.Status)
	}
	tpl, err = templates.Inspect(ctx, "base")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("clones:", tpl.Clones)

	// A template is removed once its clones are.
	for _, id := range tpl.Clones {
		if err := rt.Remove(ctx, id, true); err != nil {
			log.Fatal(err)
		}
	}
	if err := templates.Remove(ctx, "base", false); err != nil {
		log.Fatal(err)
	}
	// Output:
	// template base from base
	// clone1 running
	// clone2 running
	// clones: [clone1 clone2]
}
