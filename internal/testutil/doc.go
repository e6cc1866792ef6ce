// Package testutil holds helpers for kindling's tests: building and locating
// the fake Firecracker, finding a real one, short temporary directories for
// Unix sockets, and leak checks.
package testutil
