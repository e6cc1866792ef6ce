package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Main runs the container helper with the arguments after Arg and returns
// its exit status: "run SPEC", "exec SPEC" or (internal) "init SPEC".
// Failures before the container's command runs print one line on stderr
// and give 127 (command not found), 126 (not executable) or 125 (anything
// else), as docker does.
func Main(args []string) int {
	if len(args) > 2 && args[0] == "exec-child" {
		return execChild(args[1], args[2:])
	}
	if len(args) == 2 && args[0] == "unpack" {
		if err := unpack(args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "kindling-agent container:", err)
			return 1
		}
		return 0
	}
	if len(args) == 2 && args[0] == "stats" {
		if err := printStats(args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "kindling-agent container:", err)
			return 1
		}
		return 0
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "kindling-agent container: usage: container run|exec SPEC-JSON")
		return 125
	}
	spec, err := Decode(args[1])
	if err == nil {
		err = spec.Validate(args[0] != "exec")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kindling-agent container:", err)
		return 125
	}
	var code int
	switch args[0] {
	case "run":
		code, err = keepRun(spec, args[1])
	case "exec":
		code, err = keepExec(spec)
	case "init":
		err = initContainer(spec) // returns only on failure
	default:
		err = fmt.Errorf("unknown mode %q (want run or exec)", args[0])
	}
	if err != nil {
		fail(spec.ID, err)
		return failCode(err)
	}
	return code
}

// fail reports a failure before the container's command ran: on stderr
// (the task's), and on the guest's console, since a task may have no
// stderr (a pod's sandbox container).
func fail(id string, err error) {
	fmt.Fprintln(os.Stderr, "kindling-agent container:", err)
	if c, cerr := os.OpenFile("/dev/console", os.O_WRONLY|os.O_APPEND, 0); cerr == nil {
		fmt.Fprintf(c, "kindling-agent container %s: %v\n", id, err)
		c.Close()
	}
}

func failCode(err error) int {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return 127
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.ENOEXEC):
		return 126
	}
	return 125
}

// keepRun starts the container's init in new namespaces and keeps it:
// signals are forwarded, its end is this process's end.
func keepRun(spec Spec, arg string) (int, error) {
	dir := filepath.Join(StateDir, spec.ID)
	if pid, err := readPID(spec.ID); err == nil && syscall.Kill(pid, 0) == nil {
		return 0, fmt.Errorf("container %s already runs (pid %d)", spec.ID, pid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("container state: %w", err)
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find the agent executable: %w", err)
	}
	// The init closes its end of this pipe when it executes the command:
	// only then is its root the container's, and the PID file (which an
	// exec joins through) written.
	ready, readyW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer ready.Close()
	cmd := exec.Command(self, Arg, "init", arg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
		Setsid:     spec.Terminal,
		Setctty:    spec.Terminal,
	}
	return keep(cmd, func(pid int) error {
		readyW.Close()
		io.Copy(io.Discard, ready)
		return os.WriteFile(PIDFile(spec.ID), []byte(strconv.Itoa(pid)+"\n"), 0o600)
	})
}

// keep starts cmd, forwards this process's signals to it and returns its
// exit code; a child killed by a signal makes this process die of the same
// signal (so the agent reports it as such).
func keep(cmd *exec.Cmd, started func(pid int) error) (int, error) {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", cmd.Args[0], err)
	}
	if started != nil {
		if err := started(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return 0, err
		}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				sig := s.(syscall.Signal)
				// SIGCHLD is ours; SIGURG is the Go runtime's preemption;
				// SIGPIPE a write of ours.
				if sig != syscall.SIGCHLD && sig != syscall.SIGURG && sig != syscall.SIGPIPE {
					cmd.Process.Signal(sig)
				}
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err != nil && !ok {
		return 0, fmt.Errorf("wait for %s: %w", cmd.Args[0], err)
	}
	if ws.Signaled() {
		signal.Reset(ws.Signal())
		syscall.Kill(os.Getpid(), ws.Signal())
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

func readPID(id string) (int, error) {
	b, err := os.ReadFile(PIDFile(id))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// keepExec runs spec's command in the namespaces of running container
// spec.ID, and keeps it as keepRun does.
func keepExec(spec Spec) (int, error) {
	pid, err := readPID(spec.ID)
	if err != nil {
		return 0, fmt.Errorf("container %s is not running: %w", spec.ID, err)
	}
	// The namespaces are joined by this thread only, and the process is
	// forked from it; the thread is never given back to the Go runtime.
	runtime.LockOSThread()
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	open := func(p string, flags int) (int, error) {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("container %s: open %s: %w", spec.ID, p, err)
		}
		fds = append(fds, fd)
		return fd, nil
	}
	root, err := open(fmt.Sprintf("/proc/%d/root", pid), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return 0, err
	}
	type ns struct {
		name string
		flag int
	}
	// The mount namespace last: after it the guest's /proc is gone.
	var nsfds []int
	list := []ns{{"pid", unix.CLONE_NEWPID}, {"uts", unix.CLONE_NEWUTS}, {"ipc", unix.CLONE_NEWIPC}, {"mnt", unix.CLONE_NEWNS}}
	for _, n := range list {
		fd, err := open(fmt.Sprintf("/proc/%d/ns/%s", pid, n.name), unix.O_RDONLY)
		if err != nil {
			return 0, err
		}
		nsfds = append(nsfds, fd)
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return 0, fmt.Errorf("unshare fs: %w", err)
	}
	for i, n := range list {
		if err := unix.Setns(nsfds[i], n.flag); err != nil {
			return 0, fmt.Errorf("join the %s namespace of container %s: %w", n.name, spec.ID, err)
		}
	}
	if err := unix.Fchdir(root); err != nil {
		return 0, fmt.Errorf("enter the root of container %s: %w", spec.ID, err)
	}
	if err := unix.Chroot("."); err != nil {
		return 0, fmt.Errorf("enter the root of container %s: %w", spec.ID, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return 0, err
	}
	if err := setRlimits(spec.Rlimits); err != nil {
		return 0, err
	}
	path, err := lookPath(spec.Args[0], spec.Env)
	if err != nil {
		return 0, err
	}
	// The process is forked into the container's PID namespace, where its
	// parent (this keeper) is outside: getppid() is 0, and Go's check of
	// Pdeathsig after fork would take that for a dead parent and kill it.
	// So an intermediate step, this binary again ("exec-child", reached
	// through the container's /proc), sets the parent-death signal itself
	// and executes the command.
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: append([]string{"kindling-agent", Arg, "exec-child", path}, spec.Args...),
		Env: spec.Env, Dir: cwdOf(spec)}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: spec.AdditionalGIDs},
		Setsid:     spec.Terminal,
		Setctty:    spec.Terminal,
	}
	return keep(cmd, nil)
}

// execChild is the intermediate step of exec: it asks for SIGKILL when
// its parent (the keeper) dies, then becomes the command.
func execChild(path string, argv []string) int {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "kindling-agent container: set the parent-death signal:", err)
		return 125
	}
	err := syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "kindling-agent container: exec %s: %v\n", path, err)
	return failCode(err)
}

func cwdOf(s Spec) string {
	if s.Cwd == "" {
		return "/"
	}
	return s.Cwd
}

// lookPath finds a command in the PATH of env (a default one without),
// in the current root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return checkExec(name)
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	var firstErr error
	for _, d := range filepath.SplitList(pathVar) {
		if d == "" {
			d = "."
		}
		p, err := checkExec(filepath.Join(d, name))
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !errors.Is(err, os.ErrNotExist) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("%s: executable file not found in $PATH: %w", name, exec.ErrNotFound)
}

func checkExec(p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s: not an executable file: %w", p, os.ErrPermission)
	}
	return p, nil
}

func setRlimits(rl []Rlimit) error {
	for _, r := range rl {
		lim := unix.Rlimit{Cur: r.Soft, Max: r.Hard}
		if err := unix.Setrlimit(rlimitTypes[r.Type], &lim); err != nil {
			return fmt.Errorf("set %s: %w", r.Type, err)
		}
	}
	return nil
}
