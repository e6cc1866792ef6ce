package unix

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is a process found by ProcessesUsingDir.
type Proc struct {
	PID       int
	StartTime uint64
	Cwd       string
	Args      []string
}

// ProcessesUsingDir returns the live processes (not this one) whose working
// directory is dir or inside it, or whose command line or environment names
// a path inside dir. It finds what a directory's owner started when the
// record of those processes is lost. Zombies are left out: their working
// directory and command line are gone.
func ProcessesUsingDir(dir string) ([]Proc, error) {
	dir = filepath.Clean(dir)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var procs []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if p, ok := usesDir(pid, dir); ok {
			procs = append(procs, p)
		}
	}
	return procs, nil
}

func usesDir(pid int, dir string) (Proc, bool) {
	base := "/proc/" + strconv.Itoa(pid)
	p := Proc{PID: pid}
	if cwd, err := os.Readlink(base + "/cwd"); err == nil {
		p.Cwd = strings.TrimSuffix(cwd, " (deleted)")
	}
	cmdline, err := os.ReadFile(base + "/cmdline")
	if err != nil {
		return Proc{}, false
	}
	inside := func(path string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }
	found := inside(p.Cwd)
	for _, arg := range bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0}) {
		a := string(arg)
		p.Args = append(p.Args, a)
		if strings.HasPrefix(a, dir+"/") {
			found = true
		}
	}
	if !found {
		environ, _ := os.ReadFile(base + "/environ")
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if _, v, ok := strings.Cut(string(kv), "="); ok && inside(v) {
				found = true
				break
			}
		}
	}
	if !found {
		return Proc{}, false
	}
	if p.StartTime, err = ProcessStartTime(pid); err != nil {
		return Proc{}, false
	}
	return p, true
}
