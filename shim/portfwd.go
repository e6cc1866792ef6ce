package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/internal/netdev"
	"github.com/kindling-vm/kindling/network"
)

// CRI's PortForward (kubectl port-forward): containerd's CRI plugin enters
// the pod's network namespace and dials localhost:PORT there (tcp4 first).
// In a kindling pod that namespace holds only the VMM, and its loopback is
// not the guest's. So the shim keeps a forwarder in it: one listener on
// 127.0.0.1 of the pod's namespace, and a redirect of every other loopback
// TCP port to it (network.RedirectLoopback); each connection it takes is
// carried, by its original port, through the agent's port forward
// (agent.ForwardPort over the VM's vsock) to 127.0.0.1:PORT in the guest.
// Nothing else in the pod's namespace uses its loopback: the guest's
// traffic comes in on the tap and is redirected to eth0, never delivered
// locally, and the VMM talks to the host through Unix sockets.

// forwardDialTimeout bounds reaching the guest's port for one connection.
const forwardDialTimeout = 5 * time.Second

// portForwarder is the forwarder of one pod's namespace.
type portForwarder struct {
	nsPath string
	vsock  string
	log    *slog.Logger
	ln     *net.TCPListener
	port   uint16

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startPortForward listens in the pod's namespace nsPath and redirects its
// loopback to the listener; vsock is the VM's hybrid vsock socket.
func startPortForward(nsPath, vsock string, log *slog.Logger) (*portForwarder, error) {
	var ln net.Listener
	if err := netdev.Do(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("port forward: listen in the pod's network namespace %s: %w", nsPath, err)
	}
	f := &portForwarder{nsPath: nsPath, vsock: vsock, log: log, ln: ln.(*net.TCPListener),
		port: uint16(ln.Addr().(*net.TCPAddr).Port), conns: map[net.Conn]struct{}{}}
	if err := network.RedirectLoopback(nsPath, f.port); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("port forward: %w", err)
	}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *portForwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Warn("port forward: accept", "err", err)
			}
			return
		}
		if !f.track(c) {
			_ = c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			f.relay(c)
		}()
	}
}

// track records c, unless the forwarder is closed.
func (f *portForwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *portForwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	_ = c.Close()
}

// relay carries c to the guest's port it was opened to. A port the guest
// does not serve resets c, as a closed port of a runc pod would refuse it.
func (f *portForwarder) relay(c *net.TCPConn) {
	dst, err := network.OriginalDst(c)
	if err != nil || dst.Port() == f.port {
		f.log.Warn("port forward: connection without a redirected port", "dst", dst, "err", err)
		_ = c.SetLinger(0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	g, err := dialGuestPort(ctx, f.vsock, dst.Port())
	cancel()
	if err != nil {
		f.log.Info("port forward: guest port not reached", "port", dst.Port(), "err", err)
		_ = c.SetLinger(0)
		return
	}
	if !f.track(g) {
		_ = g.Close()
		return
	}
	defer f.untrack(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(g, c)
		closeWrite(g)
	}()
	_, _ = io.Copy(c, g)
	_ = c.CloseWrite()
	<-done
}

// closeWrite half-closes a connection that can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// close stops the forwarder: the listener, every connection, the redirect.
func (f *portForwarder) close() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	f.closed = true
	_ = f.ln.Close()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return network.RemoveLoopbackRedirect(f.nsPath)
}

// dialGuestPort connects to TCP port on the guest's loopback: the VM's
// hybrid vsock ("CONNECT <agent.ForwardPort>\n" → "OK <n>\n"), then the
// agent's forward request.
func dialGuestPort(ctx context.Context, vsock string, port uint16) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", vsock)
	if err != nil {
		return nil, fmt.Errorf("dial the VM's vsock: %w", err)
	}
	if err := agent.VsockConnect(ctx, conn, agent.ForwardPort); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := agent.RequestForward(ctx, conn, port); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}
