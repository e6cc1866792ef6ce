// Command siminit is the init of the simulated guests in fakefc's tests. It
// does what the kindling agent does at the level the fake can see: it reads
// /proc/cmdline, listens on the Unix socket the fake's kindling.vsock
// parameter names for one vsock port, and powers the guest off on request.
//
// It counts its boots in /var/boots, prints "siminit: up boot=N pid=P
// host=H" on the console, ends on SIGTERM (Ctrl-Alt-Del), and serves one
// command per connection, on the first line:
//
//	ping             answers "pong"
//	echo             copies everything after the line back until EOF
//	info             answers a JSON object (pid, hostname, cmdline, mounts, dev,
//	                 boots, network interfaces, and the parent-death signal
//	                 its main thread had when it started)
//	write PATH TEXT  writes TEXT to PATH, syncs, answers "ok" (or "error ...")
//	cat PATH         answers PATH's contents (or "error ...")
//	console TEXT     writes TEXT and a newline to /dev/console, answers "ok"
//	dial PORT TEXT   connects to host port PORT through the fake's host
//	                 socket, sends TEXT, answers what the host answered
//	poweroff         answers "bye" and calls reboot(RB_POWER_OFF)
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// port is the vsock port siminit listens on.
const port = 1024

// pdeathsig is the parent-death signal (PR_GET_PDEATHSIG) of the main
// thread, the one that was exec'd, read before the runtime's other
// threads matter: a process's parent-death signal is its threads' own,
// and only a thread that has one gets the process killed when the
// parent dies.
var pdeathsig int32

func init() {
	// Package initialisation runs on the main thread.
	const prGetPdeathsig = 2
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prGetPdeathsig, uintptr(unsafe.Pointer(&pdeathsig)), 0); e != 0 {
		pdeathsig = -1
	}
}

func main() {
	if err := run(); err != nil {
		fmt.Printf("siminit: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	boots := 1
	if b, err := os.ReadFile("/var/boots"); err == nil {
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		boots = n + 1
	}
	if err := os.MkdirAll("/var", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile("/var/boots", []byte(strconv.Itoa(boots)), 0o644); err != nil {
		return err
	}
	syscall.Sync()
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	dir := ""
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "kindling.vsock=unix:"); ok {
			dir = v
		}
	}
	if dir == "" {
		return fmt.Errorf("no kindling.vsock=unix: in %q", cmdline)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ln, err := net.Listen("unix", filepath.Join(dir, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		fmt.Println("siminit: SIGTERM, exiting")
		os.Exit(0)
	}()
	host, _ := os.Hostname()
	fmt.Printf("siminit: up boot=%d pid=%d host=%s\n", boots, os.Getpid(), host)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serve(c, dir, string(cmdline), boots)
	}
}

// serve answers the command on c's first line.
func serve(c net.Conn, dir, cmdline string, boots int) {
	defer c.Close()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch cmd {
	case "ping":
		fmt.Fprintln(c, "pong")
	case "echo":
		_, _ = io.Copy(c, r)
	case "info":
		host, _ := os.Hostname()
		mounts, _ := os.ReadFile("/proc/self/mounts")
		var dev []string
		if ents, err := os.ReadDir("/dev"); err == nil {
			for _, e := range ents {
				dev = append(dev, e.Name())
			}
		}
		var ifaces []string
		if l, err := net.Interfaces(); err == nil {
			for _, i := range l {
				ifaces = append(ifaces, i.Name+" "+i.Flags.String())
			}
		}
		_ = json.NewEncoder(c).Encode(map[string]any{
			"pid": os.Getpid(), "hostname": host, "cmdline": cmdline,
			"mounts": string(mounts), "dev": dev, "boots": boots, "ifaces": ifaces,
			"pdeathsig": pdeathsig,
		})
	case "write":
		path, text, _ := strings.Cut(arg, " ")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		syscall.Sync()
		fmt.Fprintln(c, "ok")
	case "cat":
		b, err := os.ReadFile(arg)
		if err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		_, _ = c.Write(b)
	case "console":
		f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
		if err == nil {
			_, err = fmt.Fprintln(f, arg)
			f.Close()
		}
		if err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		fmt.Fprintln(c, "ok")
	case "dial":
		port, text, _ := strings.Cut(arg, " ")
		b, err := dial(filepath.Join(dir, "host"), port, text)
		if err != nil {
			fmt.Fprintf(c, "error %v\n", err)
			return
		}
		_, _ = c.Write(b)
	case "poweroff":
		fmt.Fprintln(c, "bye")
		c.Close()
		syscall.Sync()
		if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			fmt.Printf("siminit: reboot: %v\n", err)
		}
	default:
		fmt.Fprintf(c, "unknown command %q\n", cmd)
	}
}

// dial makes a guest-initiated connection to the host's port through the
// fake's socket at path, sends text and returns the host's answer.
func dial(path, port, text string) ([]byte, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s\n", port)
	r := bufio.NewReader(c)
	ok, err := r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if !strings.HasPrefix(ok, "OK ") {
		return nil, fmt.Errorf("handshake answer %q", ok)
	}
	if _, err := io.WriteString(c, text); err != nil {
		return nil, err
	}
	_ = c.(*net.UnixConn).CloseWrite()
	return io.ReadAll(r)
}
