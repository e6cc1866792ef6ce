// Command app is the test image's entrypoint: a static program with a few
// subcommands, so that the image needs no shell.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Println("app: hello from a kindling container")
		return
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "stderr":
		fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	case "exit":
		n, _ := strconv.Atoi(args[0])
		os.Exit(n)
	case "sleep":
		d, _ := time.ParseDuration(args[0])
		time.Sleep(d)
	case "whoami":
		host, _ := os.Hostname()
		wd, _ := os.Getwd()
		_, err := os.Stat("/.kindling")
		fmt.Printf("pid=%d uid=%d host=%s cwd=%s guest-root-visible=%v env-FOO=%s\n",
			os.Getpid(), os.Getuid(), host, wd, err == nil, os.Getenv("FOO"))
	case "winsize":
		// Waits up to 5 s for the terminal to leave the default 24x80
		// (a resize arrives after the start), then prints rows and cols.
		var ws [4]uint16
		for i := 0; i < 250; i++ {
			syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
			if ws[0] != 24 || ws[1] != 80 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Printf("winsize %d %d\n", ws[0], ws[1])
	case "serve":
		// serve ADDR TEXT: a TCP server that writes TEXT to each client.
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			io.WriteString(c, args[1])
			c.Close()
		}
	case "echo-serve":
		// echo-serve ADDR: a TCP server that sends back what it reads.
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	case "ifaces":
		// The network interfaces and their addresses.
		ifs, _ := net.Interfaces()
		for _, in := range ifs {
			addrs, _ := in.Addrs()
			fmt.Printf("%s %v\n", in.Name, addrs)
		}
	case "read":
		b, err := os.ReadFile(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
		os.Stdout.Write(b)
	case "write":
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
	case "cat":
		io.Copy(os.Stdout, os.Stdin)
	default:
		fmt.Fprintln(os.Stderr, "app: unknown subcommand", os.Args[1])
		os.Exit(2)
	}
}
