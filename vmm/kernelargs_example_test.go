package vmm_test

import (
	"fmt"

	"github.com/kindling-vm/kindling/vmm"
)

func ExampleMergeKernelArgs() {
	defaults := "console=ttyS0 reboot=k panic=1 root=/dev/vda rw"
	user := `panic=0 ro init="/bin/sh -c 'echo hi'" -- single`
	fmt.Println(vmm.MergeKernelArgs(defaults, user))
	// Output:
	// console=ttyS0 reboot=k panic=0 root=/dev/vda ro init="/bin/sh -c 'echo hi'" -- single
}

func ExampleConfig_BootArgs() {
	cfg := vmm.Config{
		KernelArgs: "quiet",
		Drives:     []vmm.Drive{{ID: "rootfs", Path: "rootfs.ext4", Root: true, ReadOnly: true}},
	}
	fmt.Println(cfg.BootArgs())
	// Output:
	// console=ttyS0 reboot=k panic=1 pci=off iommu=off net.ifnames=0 random.trust_cpu=on acpi=off root=/dev/vda ro quiet
}
