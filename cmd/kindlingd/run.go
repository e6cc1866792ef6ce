package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/kindling-vm/kindling/image"
	"github.com/kindling-vm/kindling/internal/store"
	"github.com/kindling-vm/kindling/network"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/server"
	"github.com/kindling-vm/kindling/template"
)

// envAgent names the default guest agent binary, as for kindling.
const envAgent = "KINDLING_AGENT"

// Files kindlingd keeps at the top of the state root.
const (
	socketName = "kindlingd.sock"
	lockName   = "kindlingd.lock"
)

// options are kindlingd's flags.
type options struct {
	root        string
	listen      []string
	socketGroup string
	tlsCert     string
	tlsKey      string
	keyFile     string
	domain      string
	drain       time.Duration
	monitor     string
	debug       bool
	pools       []string
	poolMemory  int
	agent       string
	slotPool    int
	spares      int
}

// maxSlotPool bounds --slot-pool: each ready slot is a namespace, a veth
// pair and a tap held on the host.
const maxSlotPool = 1000

// defaultSlotPool is --slot-pool's default: slots need root (CAP_NET_ADMIN),
// so an unprivileged kindlingd keeps none.
func defaultSlotPool() int {
	if os.Geteuid() == 0 {
		return 4
	}
	return 0
}

const usage = `kindlingd serves the sandboxes of one state root: kindling's native API
(Connect RPC) and an E2B-compatible API, on a Unix socket and optionally TCP.

Usage: kindlingd [flags]

Flags:
`

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := pflag.NewFlagSet("kindlingd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&o.root, "root", "", "state root `DIR` (default $"+store.EnvRoot+", else "+store.DefaultRootDir+")")
	fs.StringArrayVar(&o.listen, "listen", nil, "serve on `ADDR`: unix:///PATH or tcp://HOST:PORT, repeatable (default unix://<root>/"+socketName+")")
	fs.StringVar(&o.socketGroup, "socket-group", "", "group (`NAME` or GID) of Unix sockets, which are mode 0660 (default the server's group)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate `FILE` for tcp listeners")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS key `FILE` for tcp listeners")
	fs.StringVar(&o.keyFile, "api-key-file", "", "`FILE` of API keys, one a line (needed by the E2B API and by tcp listeners)")
	fs.StringVar(&o.domain, "domain", "", "sandbox traffic `DOMAIN`: host <port>-<id>.DOMAIN goes into sandbox <id>")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "on SIGTERM or Ctrl-C, how long in-flight requests may take to finish")
	fs.StringVar(&o.monitor, "monitor", "", "monitor `EXECUTABLE` of the sandboxes it starts (default kindlingd itself)")
	fs.StringArrayVar(&o.pools, "pool", nil, "keep a warm pool of `TEMPLATE=N` paused clones, claimed by creates from the template (stored as 'kindling pool set' would; repeatable)")
	fs.IntVar(&o.poolMemory, "pool-memory", 2048, "bound the guest memory of all warm pools' clones to `MIB` (0: no bound)")
	fs.StringVar(&o.agent, "agent", os.Getenv(envAgent), "guest agent `FILE` injected into the images it pulls or imports (default $"+envAgent+"; without one they cannot be run)")
	fs.IntVar(&o.slotPool, "slot-pool", defaultSlotPool(), "keep `N` clone-safe network slots ready for --net slot sandboxes, made after the first such start and removed at shutdown (0: none, each start makes its own; default 4 as root, else 0)")
	fs.Lookup("slot-pool").DefValue = "0" // its usage says the default, which depends on the user
	fs.IntVar(&o.spares, "spare-monitors", 2, "keep `N` sandbox monitors started ahead of need, so that a start or clone does not wait for one to start (0: none; each idle one holds ~3 MiB, mostly code shared with the other monitors)")
	fs.BoolVar(&o.debug, "debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return o, errHelp
		}
		return o, &usageError{err}
	}
	if fs.NArg() > 0 {
		return o, &usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, &usageError{errors.New("give both --tls-cert and --tls-key, or neither")}
	}
	if o.poolMemory < 0 {
		return o, &usageError{fmt.Errorf("--pool-memory %d: must not be negative", o.poolMemory)}
	}
	if o.agent != "" {
		if fi, err := os.Stat(o.agent); err != nil || !fi.Mode().IsRegular() {
			return o, &usageError{fmt.Errorf("--agent %s: not a file: give the kindling-agent binary (go build ./cmd/kindling-agent)", o.agent)}
		}
	}
	if o.slotPool < 0 || o.slotPool > maxSlotPool {
		return o, &usageError{fmt.Errorf("--slot-pool %d: give 0 to %d", o.slotPool, maxSlotPool)}
	}
	if o.spares < 0 || o.spares > sandbox.MaxSpareMonitors {
		return o, &usageError{fmt.Errorf("--spare-monitors %d: give 0 to %d", o.spares, sandbox.MaxSpareMonitors)}
	}
	if o.drain <= 0 {
		return o, &usageError{fmt.Errorf("--drain %v: must be positive", o.drain)}
	}
	return o, nil
}

var errHelp = errors.New("help")

// run runs kindlingd until ctx is cancelled (SIGTERM, Ctrl-C), then drains.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	keys, err := readKeys(o.keyFile)
	if err != nil {
		return err
	}
	act, err := activated()
	if err != nil {
		return err
	}
	var addrs []address
	if len(act) == 0 || len(o.listen) > 0 {
		if addrs, err = parseListen(o); err != nil {
			return err
		}
	}
	for _, l := range act {
		if !l.trusted && len(keys) == 0 {
			l.cleanup()
			return fmt.Errorf("socket activation passed a tcp socket (%s): give --api-key-file", l.addr)
		}
	}
	// Spans go to OTLP when the standard variables ask for it (otel.go),
	// the server's request spans being the parents of the runtime's.
	tp, flushSpans, err := tracing(ctx)
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := flushSpans(fctx); err != nil {
			log.Warn("flush spans", "err", err)
		}
	}()
	rtOpts := []sandbox.Option{sandbox.WithLogger(log.With("component", "runtime")), sandbox.WithTracerProvider(tp), sandbox.WithSpareMonitors(o.spares)}
	if o.monitor != "" {
		rtOpts = append(rtOpts, sandbox.WithMonitorExecutable(o.monitor))
	}
	if o.slotPool > 0 {
		// The pool makes nothing until a --net slot sandbox claims its first
		// slot (which that start makes itself), so a server whose sandboxes
		// never ask for a slot changes nothing on the host's network. Slots
		// hang off kindlingd's own network namespace: sandboxes whose spec
		// names another (--netns) make their own.
		sp, err := network.NewPool(network.Slots{}, o.slotPool)
		if err != nil {
			return &usageError{fmt.Errorf("--slot-pool: %w", err)}
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := sp.Close(cctx); err != nil {
				log.Error("remove the slot pool's ready slots", "err", err)
			}
		}()
		rtOpts = append(rtOpts, sandbox.WithSlotPool(sp))
	}
	rt, err := sandbox.Open(o.root, rtOpts...)
	if err != nil {
		return fmt.Errorf("open state root: %w: give a writable --root DIR or set %s", err, store.EnvRoot)
	}
	defer rt.Close() // the spare monitors; sandboxes keep running
	lock, err := store.TryLockFile(filepath.Join(rt.Root(), lockName), store.Exclusive)
	if err != nil {
		return fmt.Errorf("state root %s: another kindlingd serves it (%w)", rt.Root(), err)
	}
	defer lock.Unlock()
	tpl, err := template.Open(rt)
	if err != nil {
		return err
	}
	pools, err := parsePools(o.pools)
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, server.Config{Runtime: rt, Templates: tpl, ImageDir: filepath.Join(rt.Root(), image.StateRootDir), Agent: o.agent, APIKeys: keys, Domain: o.domain, Logger: log,
		TracerProvider: tp, Pools: pools, PoolMemoryMiB: o.poolMemory})
	if err != nil {
		return err
	}
	defer srv.Close()

	// Open every listener before serving on any, so that a bad address
	// leaves nothing behind.
	lns := act
	defer func() {
		for _, l := range lns {
			l.cleanup()
		}
	}()
	for _, a := range addrs {
		l, err := listen(a, o, rt.Root())
		if err != nil {
			return err
		}
		lns = append(lns, l)
	}
	var tlsCfg *tls.Config
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("TLS certificate %s and key %s: %w", o.tlsCert, o.tlsKey, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	}

	servers := make([]*http.Server, len(lns))
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for i, l := range lns {
		hs := server.HTTPServer(srv.Handler(l.trusted), log)
		useTLS := !l.trusted && tlsCfg != nil
		if useTLS {
			hs.TLSConfig = tlsCfg.Clone()
		}
		servers[i] = hs
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if useTLS {
				err = hs.ServeTLS(l.ln, "", "") // the certificate is in TLSConfig; serves HTTP/2 too
			} else {
				err = hs.Serve(l.ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", l.addr, err)
			}
		}()
		log.Info("listening", "addr", l.addr)
	}
	rt.FillSpareMonitors()
	fmt.Fprintln(stdout, "kindlingd: ready")

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining requests", "bound", o.drain)
	case serveErr = <-errc:
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.drain)
	defer cancel()
	var mu sync.Mutex
	forced := 0
	var swg sync.WaitGroup
	for _, hs := range servers {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if err := hs.Shutdown(dctx); err != nil {
				_ = hs.Close()
				mu.Lock()
				forced++
				mu.Unlock()
			}
		}()
	}
	swg.Wait()
	wg.Wait()
	if forced > 0 {
		log.Warn("requests still running after the drain bound were cut off", "bound", o.drain)
	}
	log.Info("stopped; sandboxes keep running")
	return serveErr
}

// parsePools reads --pool TEMPLATE=N values.
func parsePools(vals []string) (map[string]int, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[string]int{}
	for _, v := range vals {
		name, ns, ok := strings.Cut(v, "=")
		n, err := strconv.Atoi(ns)
		if !ok || name == "" || err != nil || n < 1 || n > 1000 {
			return nil, &usageError{fmt.Errorf("--pool %q: give TEMPLATE=N with N from 1 to 1000", v)}
		}
		out[name] = n
	}
	return out, nil
}

// readKeys reads the API key file: one key a line; blank lines and lines
// starting with # are skipped.
func readKeys(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("API key file: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		keys = append(keys, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("API key file %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("API key file %s holds no key", path)
	}
	return keys, nil
}

// address is a parsed --listen value.
type address struct {
	network string // "unix" or "tcp"
	addr    string // path or host:port
	raw     string
}

func parseListen(o options) ([]address, error) {
	raw := o.listen
	if len(raw) == 0 {
		raw = []string{""} // the default socket, under the root
	}
	var out []address
	for _, s := range raw {
		if s == "" {
			out = append(out, address{network: "unix", raw: "unix://<root>/" + socketName})
			continue
		}
		u, err := url.Parse(s)
		bad := func(why string) error {
			return &usageError{fmt.Errorf("--listen %q: %s (give unix:///PATH or tcp://HOST:PORT)", s, why)}
		}
		if err != nil {
			return nil, bad("not a URL")
		}
		switch u.Scheme {
		case "unix":
			if u.Host != "" || !filepath.IsAbs(u.Path) {
				return nil, bad("a unix address needs an absolute path")
			}
			if len(u.Path) > 107 {
				return nil, bad("socket path longer than 107 bytes")
			}
			out = append(out, address{network: "unix", addr: u.Path, raw: s})
		case "tcp":
			host, port, err := net.SplitHostPort(u.Host)
			if err != nil || port == "" {
				return nil, bad("no port")
			}
			if o.tlsCert == "" && !isLoopback(host) {
				return nil, bad("plain HTTP is served on loopback addresses only: give --tls-cert and --tls-key")
			}
			if o.keyFile == "" {
				return nil, bad("a tcp listener needs --api-key-file")
			}
			out = append(out, address{network: "tcp", addr: u.Host, raw: s})
		default:
			return nil, bad("unknown scheme")
		}
	}
	return out, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listener is an open listener and how to clean it up.
type listener struct {
	ln      net.Listener
	addr    string
	trusted bool
	cleanup func()
}

// listen opens a listener. A Unix socket is made mode 0660 with the
// configured group before anyone can connect: it is created inside a
// private directory and renamed into place.
func listen(a address, o options, root string) (listener, error) {
	if a.network == "tcp" {
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			return listener{}, fmt.Errorf("listen on %s: %w", a.raw, err)
		}
		return listener{ln: ln, addr: "tcp://" + ln.Addr().String(), cleanup: func() { _ = ln.Close() }}, nil
	}
	path := a.addr
	if path == "" {
		path = filepath.Join(root, socketName)
	}
	gid := -1
	if o.socketGroup != "" {
		g, err := lookupGroup(o.socketGroup)
		if err != nil {
			return listener{}, err
		}
		gid = g
	}
	// We hold the root's lock, so a socket file at the path is a stale one
	// of an earlier kindlingd; anything else there is not ours to remove.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return listener{}, fmt.Errorf("listen on %s: %s exists and is not a socket", a.raw, path)
		}
		if err := os.Remove(path); err != nil {
			return listener{}, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".kindlingd-sock-")
	if err != nil {
		return listener{}, fmt.Errorf("listen on %s: %w", a.raw, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "s")
	if len(tmpSock) > 107 {
		tmpSock = path // cannot stage it: the directory's path is too long
	}
	ln, err := net.Listen("unix", tmpSock)
	if err != nil {
		return listener{}, fmt.Errorf("listen on %s: %w", a.raw, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (listener, error) {
		_ = ln.Close()
		_ = os.Remove(tmpSock)
		return listener{}, fmt.Errorf("listen on %s: %w", a.raw, err)
	}
	if err := os.Chmod(tmpSock, 0o660); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Chown(tmpSock, -1, gid); err != nil {
			return fail(err)
		}
	}
	if tmpSock != path {
		if err := os.Rename(tmpSock, path); err != nil {
			return fail(err)
		}
	}
	return listener{ln: ln, addr: "unix://" + path, trusted: true, cleanup: func() {
		_ = ln.Close()
		_ = os.Remove(path)
	}}, nil
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: gid %q: %w", name, g.Gid, err)
	}
	return gid, nil
}
