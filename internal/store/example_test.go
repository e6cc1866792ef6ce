package store_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/kindling-vm/kindling/internal/store"
)

func Example() {
	root, err := os.MkdirTemp("", "kindling-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)

	// The CLI passes --root, else store.DefaultRoot().
	s, err := store.Open(root)
	if err != nil {
		log.Fatal(err)
	}

	type sandbox struct {
		VCPUs int    `json:"vcpus"`
		State string `json:"state"`
	}
	ctx := context.Background()
	if err := s.Create(ctx, "web1", sandbox{VCPUs: 2, State: "created"}); err != nil {
		log.Fatal(err)
	}
	err = s.Create(ctx, "web1", sandbox{})
	fmt.Println(err)

	var sb sandbox
	err = s.Update(ctx, "web1", &sb, func() error {
		sb.State = "running"
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	var got sandbox
	if err := s.Load("web1", &got); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n", got)
	fmt.Println(store.ValidateID("../etc"))
	// Output:
	// create sandbox "web1": already exists
	// {VCPUs:2 State:running}
	// sandbox ID "../etc": must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
}
