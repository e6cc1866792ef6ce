// Command kindling-agent is kindling's guest agent: it runs inside a
// sandbox and serves the host, over vsock, the E2B envd protocol (run
// processes, move files, re-init after a clone; see docs/agent.md and
// package agent/server).
//
// Modes:
//
//   - PID 1 (the guest's init): it mounts /proc, /sys, /dev, /dev/pts,
//     /dev/shm, /run and /tmp (what is not mounted yet), sets the hostname
//     (kindling.hostname= on the kernel command line, else "kindling" unless
//     the kernel has one), brings up lo, reaps orphans, and powers the
//     machine off (sync, reboot(RB_POWER_OFF)) on SIGINT (Ctrl-Alt-Del),
//     SIGTERM or SIGPWR, or when the host POSTs /kindling/shutdown. It serves
//     on AF_VSOCK port 49983 (agent.Port).
//   - Started by the image's own init: the same serving, no PID-1 duties;
//     SIGTERM or a shutdown request make it exit.
//   - Host mode, --listen unix:PATH: the same protocol on a Unix socket, for
//     tests and development; it leaves the host's clock, entropy pool and
//     hostname alone.
//   - Simulated guest: when the kernel command line (/proc/cmdline) has
//     kindling.vsock=unix:DIR, the agent listens on the Unix socket DIR/49983
//     instead of vsock port 49983, creating DIR (after mounting /run, so DIR
//     may be under it). Everything else is unchanged. This is the contract
//     with kindling's fake Firecracker, which bridges the sandbox's
//     hybrid-vsock socket to that Unix socket. A simulated guest shares the
//     host's clock, so /init does not set it there.
//
// Processes started without an environment, working directory or user get
// the image's (/.kindling/image.json, written by the image builder) and
// those set by /init.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/server"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kindling-agent:", err)
		if os.Getpid() == 1 {
			// PID 1 must not exit: the kernel would panic. Power off.
			powerOff(slog.New(slog.NewTextHandler(os.Stderr, nil)))
		}
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	listen      string
	imageConfig string
	logLevel    string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("kindling-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "", "where to serve: unix:PATH (host mode) or vsock:PORT; default vsock:49983, or the simulated guest's socket")
	fs.StringVar(&o.imageConfig, "image-config", server.ImageConfigPath, "the image's process defaults (JSON); a missing file is no error")
	fs.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (default info, or kindling.log= on the kernel command line)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.listen != "" && !strings.HasPrefix(o.listen, "unix:") && !strings.HasPrefix(o.listen, "vsock:") {
		return o, fmt.Errorf("--listen %q: want unix:PATH or vsock:PORT", o.listen)
	}
	return o, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if level != "" {
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
		}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	pid1 := os.Getpid() == 1
	hostMode := strings.HasPrefix(o.listen, "unix:")
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	if pid1 {
		ignoreCtrlAltDel()
		mountAll(log)
	}
	var cl cmdline
	if !hostMode {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			log.Warn("kernel command line", "err", err)
		}
		if cl, err = parseCmdline(string(b)); err != nil {
			return err
		}
		if o.logLevel == "" && cl.logLevel != "" {
			if l, err := newLogger(cl.logLevel, stderr); err == nil {
				log = l
			}
		}
	}
	if pid1 {
		setHostname(cl.hostname, log)
		if err := loopbackUp(); err != nil {
			log.Warn("network", "err", err)
		}
	}

	img, err := server.LoadImageConfig(o.imageConfig)
	if err != nil {
		return err
	}

	ln, err := listen(o.listen, cl)
	if err != nil {
		return err
	}
	defer ln.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errShutdown := errors.New("shutdown requested")
	cfg := server.Config{
		Image:    img,
		Logger:   log,
		Shutdown: func() { cancel(errShutdown) },
		System:   server.GuestSystem{},
		// As init, the agent's output is the serial console: the
		// sandbox's console log on the host.
		Console: os.Stdout,
	}
	switch {
	case hostMode:
		cfg.System = server.HostSystem{}
	case cl.vsockDir != "":
		cfg.System = server.SimulatedSystem{}
	}
	if pid1 {
		cfg.Reaper = server.NewSystemReaper()
	}
	sigs := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if pid1 {
		sigs = shutdownSignals
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, sigs...)
	defer signal.Stop(sigc)
	go func() {
		select {
		case s := <-sigc:
			cancel(fmt.Errorf("signal %v", s))
		case <-ctx.Done():
		}
	}()

	srv := server.New(cfg)
	startForward(ctx, o.listen, cl, log)
	log.Info("agent serving", "addr", ln.Addr().String(), "pid1", pid1, "envd_version", server.EnvdVersion)
	serr := srv.Serve(ctx, ln)
	log.Info("agent stopping", "reason", context.Cause(ctx))
	if pid1 {
		powerOff(log)
		select {} // the kernel takes it from here
	}
	return serr
}

// listen opens the listener the options and the command line ask for.
func listen(spec string, cl cmdline) (net.Listener, error) {
	switch {
	case strings.HasPrefix(spec, "unix:"):
		path := strings.TrimPrefix(spec, "unix:")
		if path == "" {
			return nil, errors.New("--listen unix:PATH: empty path")
		}
		return listenUnix(path)
	case strings.HasPrefix(spec, "vsock:"):
		port, err := strconv.ParseUint(strings.TrimPrefix(spec, "vsock:"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--listen %q: port: %w", spec, err)
		}
		return listenVsock(uint32(port))
	case cl.vsockDir != "":
		return listenSimVsock(cl.vsockDir, agent.Port)
	default:
		return listenVsock(agent.Port)
	}
}
