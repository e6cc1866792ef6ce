package fakefc_test

import (
	"fmt"
	"time"

	"github.com/kindling-vm/kindling/internal/fakefc"
)

// Settings.Env builds the FAKEFC entry for a spawned fake.
func ExampleSettings_Env() {
	s := fakefc.Settings{
		Version: fakefc.Version{Major: 1, Minor: 7},
		Delay:   5 * time.Millisecond,
		Fail:    []fakefc.Fault{{Method: "PUT", Path: "/drives/rootfs", Status: 400, Message: "injected", Count: 1}},
	}
	fmt.Println(s.Env())
	// Output: FAKEFC={"version":"1.7.0","delay":"5ms","fail":[{"method":"PUT","path":"/drives/rootfs","status":400,"fault":"injected","count":1}]}
}

func ExampleParseSettings() {
	s, err := fakefc.ParseSettings(`{"version":"0.25.0","ctrl_alt_del":"ignore"}`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Version, s.CtrlAltDel)
	// Output: 0.25.0 ignore
}
