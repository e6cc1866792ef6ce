package vmm_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kindling-vm/kindling/vmm"
)

func ExampleConfig_Validate() {
	cfg := vmm.Config{
		Firecracker: "/nonexistent/firecracker",
		Kernel:      "/nonexistent/vmlinux",
		RunDir:      filepath.Join(os.TempDir(), "kindling-example"),
		VCPUs:       40,
		NetworkInterfaces: []vmm.NetworkInterface{
			{ID: "eth0", TapName: "tap0", MAC: "01:00:5e:00:00:01"},
		},
	}
	err := cfg.Validate()
	fmt.Println(err)

	// Every problem is a *ConfigError matching ErrInvalidConfig.
	var ce *vmm.ConfigError
	if errors.As(err, &ce) && errors.Is(err, vmm.ErrInvalidConfig) {
		fmt.Println("first problem:", ce.Field)
	}
	// Output:
	// firecracker "/nonexistent/firecracker": no such file (give the path of the firecracker executable)
	// kernel "/nonexistent/vmlinux": no such file (give the path of an uncompressed kernel image)
	// vcpus 40: out of range 1–32
	// network_interfaces[0].mac "01:00:5e:00:00:01": a multicast address (give a unicast MAC such as 06:00:ac:10:00:02, or leave it empty)
	// first problem: firecracker
}
