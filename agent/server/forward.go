package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/agent"
)

// forwardTimeout bounds reading a forward request and connecting to the
// port it names.
const forwardTimeout = 5 * time.Second

// ServeForward serves the agent's port forward on ln (vsock port
// agent.ForwardPort): each connection names a TCP port of the guest's
// loopback and is then bridged to it (see agent.RequestForward). It
// returns when ctx ends (nil) or ln fails; the bridges under way end with
// it.
func ServeForward(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			forwardConn(ctx, c, log)
		}()
	}
}

// forwardConn reads c's request and bridges it to the port it names.
func forwardConn(ctx context.Context, c net.Conn, log *slog.Logger) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(forwardTimeout))
	r := bufio.NewReader(c)
	port, err := agent.ReadForwardRequest(r)
	if err != nil {
		_ = agent.WriteForwardAnswer(c, err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	dctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	var d net.Dialer
	p := strconv.Itoa(int(port))
	gc, err := d.DialContext(dctx, "tcp", net.JoinHostPort("127.0.0.1", p))
	if err != nil {
		var err6 error
		if gc, err6 = d.DialContext(dctx, "tcp", net.JoinHostPort("::1", p)); err6 != nil {
			log.Debug("port forward", "port", port, "err", err)
			_ = agent.WriteForwardAnswer(c, errors.New("connect to port "+p+" on the guest's loopback: nothing listens there"))
			return
		}
	}
	defer gc.Close()
	if err := agent.WriteForwardAnswer(c, nil); err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() {
		_ = c.Close()
		_ = gc.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Bytes read past the request line are in r.
		_, _ = io.Copy(gc, r)
		if tc, ok := gc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(c, gc)
	// The guest's end ends the bridge: the host's connection is closed
	// (as Firecracker resets the host side when the guest closes).
	_ = c.Close()
	<-done
}
