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
// # Jailer
//
// Started under a name holding "jailer" (testutil.FakeJailer links one),
// the command plays Firecracker's jailer: see JailerMain.
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
//	 "ctrl_alt_del":"exit",     SendCtrlAltDel powers off ("exit", exit 0)
//	                            or is ignored ("ignore")
//	 "sim_sigstop":true}        pause a simulated guest with SIGSTOP, even
//	                            where a cgroup freezer works
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
// # Simulated guest
//
// No Linux guest boots on the machines kindling is tested on, so a VM that
// has a vsock device and whose root drive (is_root_device) is an ext2/3/4
// image holding the init named by init= on the command line (default
// /sbin/init) is booted as a simulated guest instead of being emulated:
//
//   - The image is bound to a loop device (LOOP_CONFIGURE, autoclear) and
//     mounted read-write (read-only for a read-only drive) in a new mount
//     namespace; its init runs as PID 1 of new PID, UTS, IPC and network
//     namespaces, pivoted into the image. A re-execution of the fake (hidden
//     first argument) does the mounts inside the namespaces and then execs
//     init.
//   - Network interfaces: before init runs, the fake opens each interface's
//     host_dev_name tap in its own network namespace, as Firecracker's
//     virtio-net does (a missing tap is created, non-persistent), makes the
//     guest's eth0, eth1, … (in the order the interfaces were added) as taps
//     in the guest's namespace with the interface's guest_mac, and copies
//     Ethernet frames between each pair. Then it does what a guest kernel
//     does with a static ip=CLIENT::GW:NETMASK::DEVICE:off argument: the
//     address on DEVICE (eth0 when empty) and a default route via GW; every
//     interface and lo are up. ip=dhcp and the DNS fields are not applied
//     (a kernel puts the resolvers in /proc/net/pnp, which the guest does
//     not get). The frames are real; the virtio device is not.
//   - The guest finds /proc, /sys (the host's, read-only), /dev (a tmpfs
//     with null, zero, full, random, urandom, tty, ptmx -> pts/ptmx, fd,
//     stdin, stdout, stderr, and console -> /proc/1/fd/1), /dev/pts (a new
//     devpts instance), /dev/shm, /tmp and /run mounted; its hostname is the
//     ip= parameter's hostname field, else the instance --id; /proc/cmdline
//     is the boot_args plus one parameter, kindling.vsock=unix:/run/kindling-vsock.
//     Missing mount points are created in the image.
//   - Other drives appear as their backing files (not block devices) bound
//     at /dev/vdb, /dev/vdc, ... in the order they were added (the root is
//     vda), read-only when the drive is. A PATCH of a drive's path_on_host
//     after boot binds the new file at the same /dev/vdX (Firecracker's
//     backing-file swap; see simswap.go for what differs: a file already
//     open on the node keeps the old backing).
//   - init's stdin is /dev/null; its stdout and stderr are a pipe the fake
//     copies to the serial console (its stdout, or the PUT /serial file),
//     so that opening /dev/console appends to the console too.
//   - The agent contract: seeing kindling.vsock=unix:DIR, a guest program
//     listens on the Unix socket DIR/<port> instead of AF_VSOCK port <port>.
//     A host connection to uds_path that sends "CONNECT <port>\n" is
//     bridged to /proc/<init>/root/run/kindling-vsock/<port>: the fake
//     answers "OK <n>\n" (n counts up from 2^30, as Firecracker's local
//     ports) and copies both ways; when nothing listens there, or the line
//     is malformed, it closes the connection, as Firecracker does.
//   - Guest-initiated connections (a real guest's connect to CID 2): a guest
//     program connects to the Unix socket DIR/host (bound by the fake before
//     init starts) and sends "CONNECT <port>\n"; the fake connects to
//     <uds_path>_<port> on the host, as Firecracker does, answers
//     "OK <n>\n" and copies both ways, or closes the connection when
//     nothing listens there.
//   - PATCH /vm Paused freezes the guest with a cgroup v2 freezer, or,
//     without one (or with "sim_sigstop":true in FAKEFC), stops every
//     process of its PID namespace with SIGSTOP; Resumed thaws it. A
//     connection made while the guest is paused is answered once it is
//     resumed. The guest's cgroup is <cgroup2 mount>/kindling-sim/<id>-
//     <fake pid>-<fake start time>, plus -t<tag> when the environment sets
//     KINDLING_SIM_CGROUP_TAG (EnvCgroupTag, set by the tests' leak
//     checks); the start time is field 22 of /proc/<pid>/stat, so a
//     recycled PID never names the same cgroup. The log says "Simulated
//     guest: cgroup DIR freezes it." Booting a guest also removes the
//     cgroups, older than a minute and empty, of fakes no longer running.
//   - SendCtrlAltDel sends SIGTERM to init. When init ends, for any reason
//     (e.g. reboot(2) in the PID namespace, which kills init), the fake
//     waits until the mount and the loop device are gone and the cgroup is
//     removed, then exits 0, as Firecracker does on a guest power-off.
//   - A SIGTERM of the fake ends the guest the same way, then the fake dies
//     of the signal. A SIGKILL of the fake kills init (PR_SET_PDEATHSIG)
//     and with it the PID namespace; the mount goes with the namespace, the
//     loop device detaches itself, and a janitor process (the fake
//     re-executed, in its own session, started before the cgroup is made)
//     removes the cgroup. The janitor works in / with an empty
//     environment, so that nothing that looks for a sandbox's processes by
//     their directory or environment takes it for one and kills it.
//   - A snapshot of a simulated guest records "simulated": true in the
//     state file; its processes are not saved. Loading it boots init afresh
//     from the root drive's image: at once with resume_vm, else at the
//     first PATCH /vm Resumed, from the drives as they are then (so a
//     restore that switches a drive by PATCH before resuming, as kindling's
//     clones do, boots the switched drive and never writes the snapshot's).
//
// Only root can do this: without root InstanceStart answers 400 "Start
// microvm error: simulated guest: ... needs root (running as uid N)". An
// image without the init boots the emulated guest, with a warning in the
// log. The guest is not isolated from the host beyond those namespaces (it
// shares the host's users, sysfs and kernel): it is test support, for
// trusted images only.
//
// # Imports
//
// Only internal/cmd/fake-firecracker imports this package; tests spawn the
// executable (testutil.FakeFirecracker builds it).
package fakefc
