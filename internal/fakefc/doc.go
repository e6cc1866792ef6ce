// Package fakefc is a fake Firecracker: an HTTP server on a Unix socket that
// speaks Firecracker's API with the same rules as a real release (unknown
// fields rejected, pre-boot-only calls refused after InstanceStart), names
// threads fc_vcpu N, writes the guest's console output, and injects faults on
// request. It runs as its own process (internal/cmd/fake-firecracker) so that
// it has a PID, threads and an exit status like the real one.
//
// It is test support only; it shares no code with package fcapi on purpose:
// it keeps its own table of the JSON fields each release accepts (v0.24 to
// v1.16), so tests of the client are not tests of the client against itself.
//
// # Command line
//
// The flags kindling passes to Firecracker: --api-sock, --id, --log-path
// (an existing file; without it log lines go to stdout), --level,
// --show-level, --show-log-origin, --boot-timer, --no-seccomp,
// --metrics-path, --http-api-max-payload-size, --mmds-size-limit, --version
// and --help. An unknown flag exits with status 153 (ExitArgParsing), as the
// real one does; a real flag kindling never uses (--config-file, --no-api,
// ...) exits with status 1 (ErrNotEmulated). An existing API socket path
// exits with status 1 and "address already in use" on stderr. The socket
// file is never removed.
//
// # Emulation settings
//
// The environment variable FAKEFC holds a JSON object, all keys optional
// (see Settings, and Settings.Env to build it from Go):
//
//	{"version":"1.14.2",        release emulated (default 1.14.2; 0.x too)
//	 "delay":"5ms",             added before every API answer
//	 "fail":[{"method":"PUT","path":"/drives/rootfs","status":400,
//	          "fault":"message","count":1}],   injected answers (count 0: always)
//	 "exit_at":3,               exit(1) on receiving the 3rd API request
//	 "no_socket":true,          never create the API socket
//	 "die_at_start":true,       exit(1) at once, with a line on stderr
//	 "stderr":"text",           extra line on stderr at start
//	 "ignore_sigterm":true,     only SIGKILL ends the process
//	 "ctrl_alt_del":"exit"}     SendCtrlAltDel powers off ("exit", exit 0)
//	                            or is ignored ("ignore")
//
// A malformed FAKEFC exits with status 1 and a message on stderr.
//
// # The emulated guest
//
// At InstanceStart the fake reads kernel_image_path. If it is kindling's
// test guest (package guest), the guest's message is written to stdout (or
// the PUT /serial file) and a power-off guest makes the process exit 0, as a
// real guest's i8042 reset does; any other kernel prints
// "fake-firecracker: guest started". Like the test guest under a real
// Firecracker, the test guest activates no virtio device, so a balloon
// resize after boot is refused.
//
// Snapshots are a small JSON file of the whole emulated VM (with the
// emulated release) and a sparse memory file; loading one written by
// another release, or any failed load, answers 400 and exits with status 1.
//
// # Imports
//
// Only internal/cmd/fake-firecracker imports this package; tests spawn the
// executable (testutil.FakeFirecracker builds it).
package fakefc
