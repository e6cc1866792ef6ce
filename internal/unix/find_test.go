package unix

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestProcessesUsingDir(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	byCwd := exec.Command("sleep", "30")
	byCwd.Dir = dir
	byArg := exec.Command("sh", "-c", "sleep 30; :", filepath.Join(dir, "fc.sock"))
	elsewhere := exec.Command("sh", "-c", "sleep 30; :", filepath.Join(other, "x"))
	for _, c := range []*exec.Cmd{byCwd, byArg, elsewhere} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	procs, err := ProcessesUsingDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.PID)
		if p.StartTime == 0 || len(p.Args) == 0 {
			t.Errorf("process %+v: no start time or arguments", p)
		}
	}
	if !slices.Contains(pids, byCwd.Process.Pid) || !slices.Contains(pids, byArg.Process.Pid) {
		t.Errorf("ProcessesUsingDir(%s) = %v; want %d (cwd) and %d (argument)", dir, pids, byCwd.Process.Pid, byArg.Process.Pid)
	}
	if slices.Contains(pids, elsewhere.Process.Pid) {
		t.Errorf("ProcessesUsingDir(%s) = %v holds %d, which uses another directory", dir, pids, elsewhere.Process.Pid)
	}
}

func TestProcessesUsingDirByEnvAndSubdir(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sandbox")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	inSub := exec.Command("sleep", "30")
	inSub.Dir = sub
	byEnv := exec.Command("sleep", "30")
	byEnv.Env = append(os.Environ(), "SOME_ROOT="+dir)
	for _, c := range []*exec.Cmd{inSub, byEnv} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	procs, err := ProcessesUsingDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.PID)
	}
	if !slices.Contains(pids, inSub.Process.Pid) || !slices.Contains(pids, byEnv.Process.Pid) {
		t.Errorf("ProcessesUsingDir(%s) = %v; want %d (cwd below it) and %d (environment)", dir, pids, inSub.Process.Pid, byEnv.Process.Pid)
	}
}
