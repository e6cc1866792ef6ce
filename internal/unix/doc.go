// Package unix is kindling's seam onto Linux system calls and /proc: pidfds,
// process start times and thread names. Everything else in kindling calls
// these small functions instead of golang.org/x/sys/unix directly.
package unix
