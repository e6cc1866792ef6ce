package guest_test

import (
	"fmt"

	"github.com/kindling-vm/kindling/internal/guest"
)

func ExampleBuild() {
	b, err := guest.Build(guest.Options{Message: "hello from the guest", Mode: guest.PowerOff})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q, %d bytes\n", b[:4], len(b))
	// Output: "\x7fELF", 207 bytes
}

func ExampleParse() {
	b, err := guest.Build(guest.Options{Message: "ready", Mode: guest.Halt})
	if err != nil {
		fmt.Println(err)
		return
	}
	o, err := guest.Parse(b)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s guest printing %q\n", o.Mode, o.Message)
	_, err = guest.Parse([]byte("#!/bin/sh\n"))
	fmt.Println(err)
	// Output:
	// halt guest printing "ready\n"
	// not a kindling guest: no ELF header
}
