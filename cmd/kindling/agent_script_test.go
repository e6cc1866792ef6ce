package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kindling-vm/kindling/internal/testutil"
)

// simGuestReady says why the simulated guest cannot run here, or nil.
func simGuestReady() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the simulated guest needs root (running as uid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("the simulated guest needs loop devices: %w", err)
	}
	if _, err := exec.LookPath("busybox"); err != nil {
		if _, err := os.Stat("/bin/busybox"); err != nil {
			return errors.New("the test guest needs a static busybox (install busybox-static)")
		}
	}
	return nil
}

// cmdAgentRoot writes an ext4 root filesystem whose init is the real
// agent, with busybox: agentroot FILE.
func cmdAgentRoot(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: agentroot FILE")
	}
	agentBin, err := testutil.AgentBinaryPath()
	ts.Check(err)
	ts.Check(testutil.WriteAgentRootfs(ts.MkAbs(args[0]), testutil.AgentRootOptions{Init: agentBin}))
}
