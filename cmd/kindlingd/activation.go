package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// listenFDsStart is the first file descriptor systemd passes.
const listenFDsStart = 3

// activated returns the listeners systemd's socket activation passed
// (LISTEN_PID names this process, LISTEN_FDS counts them from fd 3), and
// unsets the variables so that no child inherits them. Unix sockets are
// trusted (their file mode guards them); TCP ones need API keys.
func activated() ([]listener, error) {
	defer func() {
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			_ = os.Unsetenv(v)
		}
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	var out []listener
	for i := range n {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		name := fmt.Sprintf("fd%d", fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		_ = f.Close()
		if err != nil {
			for _, l := range out {
				l.cleanup()
			}
			return nil, fmt.Errorf("socket activation: fd %d (%s) is not a listening socket: %w", fd, name, err)
		}
		l := listener{ln: ln, cleanup: func() { _ = ln.Close() }}
		switch a := ln.Addr().(type) {
		case *net.UnixAddr:
			l.addr, l.trusted = "unix://"+a.Name+" (activated)", true
			// The socket file belongs to systemd: never unlink it.
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
		default:
			l.addr = "tcp://" + ln.Addr().String() + " (activated)"
		}
		out = append(out, l)
	}
	return out, nil
}
