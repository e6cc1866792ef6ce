package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kindling-vm/kindling/agent"
	"github.com/kindling-vm/kindling/agent/internal/agenttest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// zombieChildren lists the children of pid that are zombies, from the
// host's /proc.
func zombieChildren(t *testing.T, pid int) []string {
	t.Helper()
	var z []string
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, c := range strings.Fields(string(b)) {
			st, err := os.ReadFile("/proc/" + c + "/stat")
			if err != nil {
				continue
			}
			s := string(st)
			if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
				z = append(z, c)
			}
		}
	}
	return z
}

// The agent as the init of its own namespaces: it reaps orphans, brings up
// lo, and powers off on request (in a PID namespace the kernel turns that
// into the init's death by SIGINT, which is what a simulated guest's
// Firecracker sees), taking every process with it.
func TestAgentAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running the agent as PID 1 of new namespaces needs root")
	}
	testutil.CheckLeaks(t)
	a := agenttest.Start(t, agenttest.Options{PID1: true})
	c := client(t, agent.Config{SocketPath: a.Socket})
	// The agent logs its start before it serves, but the test reads its
	// stderr on another goroutine: wait for the line to arrive.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(a.Log(), "pid1=true"); {
		if time.Now().After(deadline) {
			t.Fatalf("agent does not say it is PID 1: %s", a.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// lo is up in the agent's network namespace (it starts down).
	ns, err := netns.GetFromPid(a.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	_ = ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo is down in the agent's network namespace: flags %v", lo.Attrs().Flags)
	}
	// Orphans are reaped: five background children outlive their shell.
	if _, _, code := run(t, c, agent.ExecConfig{Args: []string{"sh", "-c", "for i in 1 2 3 4 5; do sleep 0.1 & done; exit 0"}}); code != 0 {
		t.Fatalf("orphan maker exited %d", code)
	}
	pid := a.Cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		z := zombieChildren(t, pid)
		if len(z) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent (pid %d) left zombie children %v", pid, z)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The agent's own processes still get their exit status.
	if _, _, code := run(t, c, agent.ExecConfig{Args: []string{"sh", "-c", "exit 9"}}); code != 9 {
		t.Errorf("exit status through the PID-1 reaper = %d, want 9", code)
	}
	// Power off: the agent dies as a PID namespace's init does.
	p, err := c.Exec(context.Background(), agent.ExecConfig{Args: []string{"sleep", "100"}, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still running 10s after the shutdown request: %s", a.Log())
	}
	ws, _ := a.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("agent ended with %v, want death by SIGINT (power-off of a PID namespace)", a.Cmd.ProcessState)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Either the agent reported the kill before it went, or the stream broke.
	if code, err := p.Wait(wctx); err == nil && code != 128+int(syscall.SIGKILL) {
		t.Errorf("process ended with %d at power-off, want killed (137) or the agent gone", code)
	}
}
