package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cmdline holds what the agent reads from the kernel command line.
type cmdline struct {
	hostname string // kindling.hostname=
	vsockDir string // kindling.vsock=unix:DIR (simulated guest)
	logLevel string // kindling.log=
}

// parseCmdline parses /proc/cmdline's contents.
func parseCmdline(s string) (cmdline, error) {
	var c cmdline
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "kindling.hostname":
			c.hostname = v
		case "kindling.log":
			c.logLevel = v
		case "kindling.vsock":
			dir, ok := strings.CutPrefix(v, "unix:")
			if !ok || !filepath.IsAbs(dir) {
				return c, fmt.Errorf("kernel command line: kindling.vsock=%q: want unix:/ABSOLUTE/DIR", v)
			}
			c.vsockDir = filepath.Clean(dir)
		}
	}
	return c, nil
}

// listenUnix listens on a Unix socket, replacing a stale socket file.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	return ln, nil
}

// listenSimVsock listens where a simulated guest's vsock port is: the Unix
// socket DIR/PORT, which the fake Firecracker bridges to the host's hybrid
// vsock socket.
func listenSimVsock(dir string, port uint32) (net.Listener, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("simulated vsock: %w", err)
	}
	return listenUnix(filepath.Join(dir, strconv.FormatUint(uint64(port), 10)))
}

// vsockListener accepts AF_VSOCK connections (the net package has no vsock
// support): a non-blocking socket in Go's poller.
type vsockListener struct {
	f    *os.File
	rc   syscall.RawConn
	addr vsockAddr
}

type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("vsock:%d:%d", a.cid, a.port) }

// listenVsock listens on vsock port on any CID.
func listenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w (is the guest kernel built with virtio-vsock?)", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	f := os.NewFile(uintptr(fd), "vsock-listener")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	return &vsockListener{f: f, rc: rc, addr: vsockAddr{cid: unix.VMADDR_CID_ANY, port: port}}, nil
}

func (l *vsockListener) Accept() (net.Conn, error) {
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	remote := vsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = vsockAddr{cid: vm.CID, port: vm.Port}
	}
	return &vsockConn{File: os.NewFile(uintptr(nfd), "vsock"), local: l.addr, remote: remote}, nil
}

func (l *vsockListener) Close() error   { return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is an accepted vsock connection.
type vsockConn struct {
	*os.File
	local, remote vsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr                { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr               { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.File.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.File.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.File.SetWriteDeadline(t) }
