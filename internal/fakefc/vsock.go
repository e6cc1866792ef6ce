package fakefc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// firstLocalPort is the first host-side port number Firecracker gives the
// connections it forwards to the guest (it counts up from 2^30); the fake
// answers "OK <n>" with the same numbers.
const firstLocalPort = 1 << 30

// guestDialer connects to a port a guest program listens on.
type guestDialer interface {
	dialPort(port uint32) (net.Conn, error)
}

// vsockListener is the host side of the emulated hybrid vsock: a Unix
// socket at uds_path, bound when the device is configured, as Firecracker
// does. A host connection sends "CONNECT <port>\n". With a simulated guest
// the fake connects to the guest's listener on that port, answers
// "OK <n>\n" and copies both ways; otherwise (or when nobody listens on the
// port) it closes the connection, as Firecracker does for an unanswered
// port.
type vsockListener struct {
	ln   net.Listener
	path string

	mu        sync.Mutex  // guards guest and nextLocal
	guest     guestDialer // nil without a simulated guest
	nextLocal uint32
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
	v := &vsockListener{ln: ln, path: path, nextLocal: firstLocalPort}
	go v.serve()
	return v, nil
}

// setGuest makes host connections reach g (nil: nobody listens).
func (v *vsockListener) setGuest(g guestDialer) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.guest = g
}

// serve handles each connection's handshake.
func (v *vsockListener) serve() {
	for {
		c, err := v.ln.Accept()
		if err != nil {
			return
		}
		go v.handle(c)
	}
}

// handle reads the CONNECT line of c and, when the guest answers on the
// port, bridges c to it; otherwise it closes c.
func (v *vsockListener) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	port, ok := parseConnect(line)
	v.mu.Lock()
	g := v.guest
	local := v.nextLocal
	v.nextLocal++
	v.mu.Unlock()
	if !ok || g == nil {
		return
	}
	gc, err := g.dialPort(port)
	if err != nil {
		return
	}
	defer gc.Close()
	if _, err := fmt.Fprintf(c, "OK %d\n", local); err != nil {
		return
	}
	splice(c, r, gc)
}

// parseConnect parses "CONNECT <port>\n".
func parseConnect(line string) (uint32, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// splice copies host→guest (reading through hr, which may hold bytes sent
// right after the CONNECT line) and guest→host. The host's end of stream
// is passed on as a half close; the guest's ends the connection (the
// caller closes both), as Firecracker resets the host side when the guest
// closes.
func splice(host net.Conn, hr io.Reader, guest net.Conn) {
	go func() {
		_, _ = io.Copy(guest, hr)
		closeWrite(guest)
	}()
	_, _ = io.Copy(host, guest)
}

// closeWrite half-closes c when it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// close stops listening and removes the socket file, as replacing the
// device does.
func (v *vsockListener) close() {
	_ = v.ln.Close()
	_ = os.Remove(v.path)
}
