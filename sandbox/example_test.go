package sandbox_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/sandbox"
)

// firecracker is the firecracker executable the examples run. Under go
// test it is kindling's fake Firecracker, so the examples run anywhere; a
// program would leave Spec.Firecracker empty and set $KINDLING_FIRECRACKER,
// or put firecracker on PATH.
func firecracker() string {
	fc, err := testutil.BuildFakeFirecracker()
	if err != nil {
		log.Fatal(err)
	}
	return fc
}

// A sandbox running kindling's built-in demo guest, which greets on its
// serial console and powers off: create it, start it, wait for its end and
// read what it printed. (A program embedding the runtime calls
// sandbox.MonitorMain first thing in main.)
func Example_runAndWait() {
	root, err := os.MkdirTemp("", "kx")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	rt, err := sandbox.Open(root)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	spec := sandbox.Spec{ID: "hello", Demo: sandbox.DemoPowerOff, Firecracker: firecracker()}
	if _, err := rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		log.Fatal(err)
	}
	defer rt.Remove(ctx, "hello", true)
	if _, err := rt.Start(ctx, "hello"); err != nil {
		log.Fatal(err)
	}
	exit, err := rt.Wait(ctx, "hello")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code:", exit.Code)

	console, err := rt.Console(ctx, "hello", sandbox.LogOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer console.Close()
	out, err := io.ReadAll(console)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.Contains(string(out), "Hello from kindling!"))
	// Output:
	// exit code: 0
	// true
}

// Snapshot a running sandbox into a directory and start a second sandbox
// from it: the copy resumes where the first one was, without booting.
func Example_snapshotAndRestore() {
	root, err := os.MkdirTemp("", "kx")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	rt, err := sandbox.Open(root)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	spec := sandbox.Spec{ID: "first", Demo: sandbox.DemoIdle, Firecracker: firecracker(), MemoryMiB: 64}
	if _, err := rt.Create(ctx, spec, sandbox.CreateOptions{}); err != nil {
		log.Fatal(err)
	}
	defer rt.Remove(ctx, "first", true)
	if _, err := rt.Start(ctx, "first"); err != nil {
		log.Fatal(err)
	}

	dir := filepath.Join(root, "snap")
	snap, err := rt.Snapshot(ctx, "first", dir, sandbox.SnapshotOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("snapshot of", snap.From)

	second, err := rt.Restore(ctx, dir, sandbox.RestoreOptions{ID: "second", Labels: map[string]string{"from": "snap"}, Firecracker: firecracker()})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Remove(ctx, "second", true)
	fmt.Println(second.ID, second.Status)

	restored, err := rt.List(ctx, sandbox.ListOptions{Labels: map[string]string{"from": "snap"}})
	if err != nil {
		log.Fatal(err)
	}
	for _, in := range restored {
		fmt.Println("labelled:", in.ID)
	}
	first, err := rt.Inspect(ctx, "first")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(first.ID, first.Status)
	// Output:
	// snapshot of first
	// second running
	// labelled: second
	// first running
}
