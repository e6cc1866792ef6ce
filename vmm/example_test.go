package vmm_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kindling-vm/kindling/vmm"
)

// Boot a microVM, wait for its console to say it is up, and stop it.
func Example() {
	m, err := vmm.New(vmm.Config{
		Firecracker: "/usr/local/bin/firecracker",
		RunDir:      "/run/kindling/vm1",
		Kernel:      "/var/lib/kindling/vmlinux",
		VCPUs:       2,
		MemoryMiB:   256,
		ConsolePath: "/run/kindling/vm1/console.log",
		WaitConsole: "login:",
	})
	if err != nil {
		log.Fatal(err) // an invalid Config: nothing was spawned
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		log.Fatal(err) // nothing is left behind
	}
	pid, _ := m.PID()
	fmt.Println("running as pid", pid)
	if err := m.Stop(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// Pause a running microVM and resume it.
func ExampleMachine_Pause() {
	var m *vmm.Machine // from vmm.New and Start
	ctx := context.Background()
	if err := m.Pause(ctx); err != nil {
		log.Fatal(err)
	}
	// The vCPUs are stopped here: copy the disks, take a snapshot, …
	if err := m.Resume(ctx); err != nil {
		log.Fatal(err)
	}
}

// Snapshot a microVM and restore the snapshot into a new VMM.
func ExampleMachine_CreateSnapshot() {
	var m *vmm.Machine // from vmm.New and Start
	ctx := context.Background()
	snap, err := m.CreateSnapshot(ctx, vmm.SnapshotOptions{
		Dir:         "/var/lib/kindling/snapshots/base",
		PauseAround: true, // pause for the snapshot, then resume
	})
	if err != nil {
		log.Fatal(err)
	}
	clone, err := vmm.Restore(ctx, vmm.RestoreConfig{
		Snapshot: snap,
		Config: vmm.Config{
			Firecracker: "/usr/local/bin/firecracker",
			RunDir:      "/run/kindling/clone1",
		},
		Resume: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer clone.Stop(ctx)
}

// Hot-plug a drive into a slot of the placeholder pool, then remove it.
func ExampleMachine_AttachDrive() {
	var m *vmm.Machine // from vmm.New with Config.Placeholders > 0, and Start
	ctx := context.Background()
	slot, err := m.AttachDrive(ctx, vmm.Drive{
		ID:       "dataset",
		Path:     "/var/lib/kindling/dataset.ext4",
		ReadOnly: true, // the pool is read-only unless built WithPlaceholderAccess
	})
	if err != nil {
		log.Fatal(err) // a full pool matches vmm.ErrPoolExhausted
	}
	fmt.Println("attached in", slot)
	if err := m.DetachDrive(ctx, "dataset"); err != nil {
		log.Fatal(err)
	}
}

// Find a VMM again from its recorded state, in another process.
func ExampleAttach() {
	var st vmm.MachineState // read back from where Machine.State was saved
	ctx := context.Background()
	m, err := vmm.Attach(ctx, st)
	if err != nil {
		log.Fatal(err) // the process is gone, or the PID was reused: vmm.ErrNotFound
	}
	if err := m.Stop(ctx); err != nil {
		log.Fatal(err)
	}
}
