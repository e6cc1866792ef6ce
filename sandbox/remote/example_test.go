package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/sandbox/remote"
)

// A program drives a kindlingd's sandboxes as it would the local runtime:
// the client is a sandbox.Controller, and its errors match the same
// sentinels.
func Example() {
	c, err := remote.New(remote.Config{Host: "unix:///run/kindling/kindlingd.sock"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var ctl sandbox.Controller = c
	ctx := context.Background()
	if _, err := ctl.Create(ctx, sandbox.Spec{ID: "web", Demo: sandbox.DemoIdle}, sandbox.CreateOptions{}); errors.Is(err, sandbox.ErrExists) {
		fmt.Println("web exists already")
	} else if err != nil {
		log.Fatal(err)
	}
	in, err := ctl.Start(ctx, "web")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(in.ID, in.Status)
}

// The egress policy of a server's sandbox (one made with a slot network)
// changes while it runs, as with the local runtime: the client is a
// sandbox.EgressSetter.
func ExampleClient_SetEgress() {
	c, err := remote.New(remote.Config{Host: "unix:///run/kindling/kindlingd.sock"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var es sandbox.EgressSetter = c
	in, err := es.SetEgress(context.Background(), "web", sandbox.EgressChange{Allow: []string{"10.1.0.0/16", "pypi.org"}})
	if errors.Is(err, sandbox.ErrInvalid) {
		// A bad rule (nothing changed), or a sandbox without a slot or
		// CNI network.
		log.Fatalf("egress of web: %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(in.Spec.Egress, in.Spec.AllowEgress)
}
