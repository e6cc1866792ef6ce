package main

import (
	"context"
	"log/slog"
	"net"
	"strings"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/server"
)

// startForward serves the port forward (agent.ForwardPort) beside the
// agent's API, in a guest (vsock) or a simulated guest; host mode has no
// guest loopback to forward to. A failure to listen is logged, not fatal:
// the agent's API matters more.
func startForward(ctx context.Context, spec string, cl cmdline, log *slog.Logger) {
	if strings.HasPrefix(spec, "unix:") {
		return
	}
	var (
		ln  net.Listener
		err error
	)
	if cl.vsockDir != "" {
		ln, err = listenSimVsock(cl.vsockDir, agent.ForwardPort)
	} else {
		ln, err = listenVsock(agent.ForwardPort)
	}
	if err != nil {
		log.Warn("port forward: not served", "err", err)
		return
	}
	go func() {
		if err := server.ServeForward(ctx, ln, log); err != nil {
			log.Warn("port forward", "err", err)
		}
	}()
}
