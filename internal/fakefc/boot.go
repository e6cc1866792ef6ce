package fakefc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	kunix "github.com/kindling-vm/kindling/internal/unix"
)

// genericConsoleLine is written on the console when the kernel is not a
// kindling test guest.
const genericConsoleLine = "fake-firecracker: guest started\n"

// instanceStart emulates InstanceStart: vCPU threads come up and the guest
// writes its console output; a power-off guest then ends the process.
func (fc *server) instanceStart() (reply, error) {
	m := fc.vm
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.boot == nil {
		return reply{}, badRequest("Start microvm error: Cannot start microvm without kernel configuration.")
	}
	kernel, err := os.ReadFile(str(m.boot, "kernel_image_path"))
	if err != nil {
		return reply{}, badRequest("Start microvm error: Cannot load kernel due to invalid memory configuration or invalid kernel image: %v", pathErr(err))
	}
	for _, d := range m.drives {
		if p := str(d, "path_on_host"); p != "" {
			if _, err := os.Stat(p); err != nil {
				return reply{}, badRequest("Start microvm error: block device %q: %v", str(d, "drive_id"), pathErr(err))
			}
		}
	}
	booted, err := fc.bootSimulated()
	if err != nil {
		return reply{}, badRequest("Start microvm error: simulated guest: %v", err)
	}
	startVCPUs(m.vcpuCount())
	m.state = running
	m.startedAt = time.Now()
	m.log.info("fc_api", "Successfully started microvm that was configured from one single API session.")
	if booted {
		return reply{}, nil
	}
	var rep reply
	out := genericConsoleLine
	g, err := guest.Parse(kernel)
	switch {
	case err == nil:
		out = g.Output()
		m.testGuest = true
		if g.Mode == guest.PowerOff {
			rep.after = fc.powerOff
		}
	case !errors.Is(err, guest.ErrNotGuest):
		m.log.warn("fc_api", "Kernel looks like a test guest but does not parse: %v", err)
	}
	if _, err := io.WriteString(m.console, out); err != nil {
		m.log.warn("fc_api", "Write to the serial console: %v", err)
	}
	return rep, nil
}

// vcpuCount returns the configured number of vCPUs (1 by default); m.mu is
// held.
func (m *vm) vcpuCount() int {
	if n := num(m.machine, "vcpu_count"); n > 0 {
		return int(n)
	}
	return 1
}

// vcpuThreads counts the vCPU threads of the process, so that starting
// them twice never makes duplicates.
var vcpuThreads struct {
	mu sync.Mutex // guards n
	n  int
}

// startVCPUs starts n OS threads named "fc_vcpu 0" … "fc_vcpu n-1", as
// Firecracker names its vCPU threads, and returns once they are named. The
// threads block forever without using CPU.
func startVCPUs(n int) {
	vcpuThreads.mu.Lock()
	defer vcpuThreads.mu.Unlock()
	var wg sync.WaitGroup
	for i := vcpuThreads.n; i < n; i++ {
		wg.Add(1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread stays ours
			_ = kunix.SetThreadName(fmt.Sprintf("fc_vcpu %d", i))
			wg.Done()
			select {}
		}()
	}
	wg.Wait()
	vcpuThreads.n = max(vcpuThreads.n, n)
}

// bootSimulated boots the VM as a simulated guest when its configuration
// asks for one (see simPlan), and reports whether it did; m.mu is held. An
// image without the init program boots the emulated guest instead, with a
// warning in the log.
func (fc *server) bootSimulated() (bool, error) {
	m := fc.vm
	plan, ok := m.simPlan()
	if !ok {
		return false, nil
	}
	plan.sigstop = fc.settings.SimSIGSTOP
	plan.uds = str(m.vsock, "uds_path")
	rootFile, err := jailPlan(&plan)
	if err != nil {
		return false, err
	}
	if rootFile != nil {
		defer rootFile.Close()
	}
	g, err := bootSim(plan, m.id, m.console, m.log, fc.simPowerOff)
	if errors.Is(err, errNoInit) {
		m.log.warn("fc_api", "Not a simulated guest: %v", err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m.sim = g
	if m.vsockLn != nil {
		m.vsockLn.setGuest(g)
	}
	if !fc.settings.IgnoreSIGTERM {
		fc.sigtermOnce.Do(func() {
			handleSIGTERM(func() *simGuest {
				m.mu.Lock()
				defer m.mu.Unlock()
				return m.sim
			})
		})
	}
	m.log.info("fc_api", "Simulated guest: %s runs as PID %d in its own namespaces, root %s.", plan.init, g.pid, plan.image)
	return true, nil
}

// simPowerOff ends the process once the simulated guest's init has ended,
// as a guest power-off ends Firecracker.
func (fc *server) simPowerOff() {
	fc.log.info("main", "Vmm is stopping.")
	fc.exit(ExitOK)
}
