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
