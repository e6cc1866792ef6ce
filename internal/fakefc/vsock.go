package fakefc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// vsockListener is the host side of the emulated hybrid vsock: a Unix
// socket at uds_path, bound when the device is configured, as Firecracker
// does. A host connection sends "CONNECT <port>\n"; no guest program
// listens, so the fake closes it, as Firecracker does for an unanswered
// port.
type vsockListener struct {
	ln   net.Listener
	path string
}

// listenVsock binds the vsock's Unix socket at path.
func listenVsock(path string) (*vsockListener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return nil, fmt.Errorf("%s", pathErr(errno))
		}
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	v := &vsockListener{ln: ln, path: path}
	go v.serve()
	return v, nil
}

// serve reads each connection's CONNECT line and closes it.
func (v *vsockListener) serve() {
	for {
		c, err := v.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = bufio.NewReader(c).ReadString('\n')
		}()
	}
}

// close stops listening and removes the socket file, as replacing the
// device does.
func (v *vsockListener) close() {
	_ = v.ln.Close()
	_ = os.Remove(v.path)
}
