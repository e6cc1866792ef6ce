// Package testutil holds helpers for kindling's tests: building and locating
// the fake Firecracker, finding a real Firecracker or jailer (through
// KINDLING_FIRECRACKER and KINDLING_JAILER, skipping without them or under
// -short), spawning a Firecracker-like process with its socket, log and
// output captured (StartVMM), short temporary directories for Unix sockets,
// test guest kernels, ext4 images built from a directory (Ext4FromDir, for
// simulated guests), and leak checks for child processes, file descriptors,
// goroutines and the cgroups of the simulated guests of the test's fakes.
//
// Every package's tests import it; a package using FakeFirecracker should
// call Main from its TestMain so the fake's build directory is removed.
// Nothing outside tests imports it.
package testutil
