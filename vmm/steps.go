package vmm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
)

// step is one named stage of configuring a VMM. A boot and a restore run
// different lists; the jailer changes only what paths the steps send.
type step struct {
	name string
	fn   func(ctx context.Context, c *fcapi.Client) error
	// fatal says Firecracker exits when the step fails, so its exit status
	// and stderr belong in the error.
	fatal bool
}

// StepError is a failed configuration step: Step names it ("drives",
// "instance-start", "load-snapshot") and Err is the cause, which the
// fcapi error types (*fcapi.APIError, …) match through errors.As.
type StepError struct {
	Step string
	Err  error
}

// Error returns "boot step drives: put drive "root": …".
func (e *StepError) Error() string { return "boot step " + e.Step + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *StepError) Unwrap() error { return e.Err }

// runSteps runs steps in order against the Machine's API client, stopping
// at the first error (wrapped in a *StepError naming the step).
func (m *Machine) runSteps(ctx context.Context, steps []step) error {
	m.mu.Lock()
	client, p := m.client, m.proc
	m.mu.Unlock()
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return &StepError{Step: s.name, Err: err}
		}
		began := time.Now()
		if err := s.fn(ctx, client); err != nil {
			return &StepError{Step: s.name, Err: m.explain(p, err, s.fatal)}
		}
		m.logger.Debug("boot step done", "step", s.name, "took", time.Since(began))
	}
	return nil
}

// bootSteps is the configuration of a fresh microVM, in Firecracker's order.
func (m *Machine) bootSteps() []step {
	return []step{
		{name: "machine-config", fn: m.stepMachineConfig},
		{name: "boot-source", fn: m.stepBootSource},
		{name: "drives", fn: m.stepDrives},
		{name: "placeholder-pool", fn: m.stepPlaceholderPool},
		{name: "network", fn: m.stepNetwork},
		{name: "mmds", fn: m.stepMMDS},
		{name: "vsock", fn: m.stepVsock},
		{name: "entropy", fn: m.stepEntropy},
		{name: "balloon", fn: m.stepBalloon},
		{name: "memory-hotplug", fn: m.stepMemoryHotplug},
		{name: "metrics", fn: m.stepMetrics},
		{name: "instance-start", fn: func(ctx context.Context, c *fcapi.Client) error { return c.InstanceStart(ctx) }},
	}
}

func (m *Machine) stepMachineConfig(ctx context.Context, c *fcapi.Client) error {
	cfg := m.apiConfig()
	return c.PutMachineConfig(ctx, fcapi.MachineConfig{
		VCPUCount:       cfg.VCPUs,
		MemSizeMiB:      cfg.MemoryMiB,
		SMT:             cfg.SMT,
		CPUTemplate:     fcapi.CPUTemplate(cfg.CPUTemplate),
		TrackDirtyPages: cfg.TrackDirtyPages,
	})
}

func (m *Machine) stepBootSource(ctx context.Context, c *fcapi.Client) error {
	cfg := m.apiConfig()
	return c.PutBootSource(ctx, fcapi.BootSource{
		KernelImagePath: cfg.Kernel,
		BootArgs:        cfg.BootArgs(),
		InitrdPath:      cfg.Initrd,
	})
}

// stepDrives attaches the drives in order, the Root drive first so that it
// is /dev/vda (as Config.BootArgs assumes).
func (m *Machine) stepDrives(ctx context.Context, c *fcapi.Client) error {
	cfg := m.apiConfig()
	drives := make([]Drive, 0, len(cfg.Drives))
	for _, d := range cfg.Drives {
		if d.Root {
			drives = append(drives, d)
		}
	}
	for _, d := range cfg.Drives {
		if !d.Root {
			drives = append(drives, d)
		}
	}
	for _, d := range drives {
		if err := c.PutDrive(ctx, apiDrive(d)); err != nil {
			return err
		}
	}
	return nil
}

// apiDrive is d as Firecracker's API takes it.
func apiDrive(d Drive) fcapi.Drive {
	return fcapi.Drive{
		DriveID:    d.ID,
		PathOnHost: d.Path,
		// The root device goes on the kernel command line (Config.BootArgs),
		// where a user's root= can override it; Firecracker's own
		// is_root_device would append a root= after ours and win.
		IsReadOnly:  d.ReadOnly,
		CacheType:   fcapi.CacheType(d.CacheType),
		IOEngine:    fcapi.IOEngine(d.IOEngine),
		RateLimiter: apiRateLimiter(d.RateLimiter),
	}
}

// placeholderSize is the size of a placeholder file: one sector, sparse.
const placeholderSize = 512

// placeholderID is the drive ID of pool slot i.
func placeholderID(i int) string { return fmt.Sprintf("pool%d", i) }

// stepPlaceholderPool creates cfg.Placeholders empty sparse files in RunDir
// and attaches each as a drive "poolN", read-only unless the Machine was
// built WithPlaceholderAccess(PlaceholdersReadWrite).
func (m *Machine) stepPlaceholderPool(ctx context.Context, c *fcapi.Client) error {
	n := m.cfg.Placeholders
	if n == 0 {
		return nil
	}
	readOnly := m.opts.placeholder != PlaceholdersReadWrite
	slots := make([]Slot, 0, n)
	for i := range n {
		id := placeholderID(i)
		host, inVM, err := m.makePlaceholder(id)
		if err != nil {
			return fmt.Errorf("placeholder %q: %w", id, err)
		}
		slots = append(slots, Slot{ID: id, Placeholder: host, ReadOnly: readOnly})
		if err := c.PutDrive(ctx, fcapi.Drive{
			DriveID:    id,
			PathOnHost: inVM,
			IsReadOnly: readOnly,
		}); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.pool = slots
	m.mu.Unlock()
	return nil
}

// makePlaceholder creates the placeholder file of slot id: in RunDir, or for
// a jailed VMM in the jail (owned by the jail's user). It returns its host
// path and the path Firecracker sees.
func (m *Machine) makePlaceholder(id string) (host, inVM string, err error) {
	name := id + ".img"
	m.mu.Lock()
	jail := m.jail
	m.mu.Unlock()
	if jail == nil {
		host = filepath.Join(m.cfg.RunDir, name)
		m.mu.Lock()
		m.madeFiles = append(m.madeFiles, host)
		m.mu.Unlock()
		return host, host, writePlaceholder(host)
	}
	host = filepath.Join(jail.layout.ChrootDir, name)
	if err := writePlaceholder(host); err != nil {
		return "", "", err
	}
	if err := os.Chown(host, m.cfg.Jailer.UID, m.cfg.Jailer.GID); err != nil {
		return "", "", err
	}
	return host, "/" + name, nil
}

// writePlaceholder creates (or truncates) a sparse placeholder file.
func writePlaceholder(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(placeholderSize); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (m *Machine) stepNetwork(ctx context.Context, c *fcapi.Client) error {
	for _, n := range m.cfg.NetworkInterfaces {
		if err := c.PutNetworkInterface(ctx, fcapi.NetworkInterface{
			IfaceID:       n.ID,
			HostDevName:   n.TapName,
			GuestMAC:      n.MAC,
			RxRateLimiter: apiRateLimiter(n.RxRateLimiter),
			TxRateLimiter: apiRateLimiter(n.TxRateLimiter),
		}); err != nil {
			return err
		}
	}
	return nil
}

func (m *Machine) stepMMDS(ctx context.Context, c *fcapi.Client) error {
	mm := m.cfg.MMDS
	if mm == nil {
		return nil
	}
	ifaces := mm.Interfaces
	if len(ifaces) == 0 {
		for _, n := range m.cfg.NetworkInterfaces {
			ifaces = append(ifaces, n.ID)
		}
	}
	version := fcapi.MMDSVersion(mm.Version)
	if version == "" {
		version = fcapi.MMDSv2
	}
	if err := c.PutMMDSConfig(ctx, fcapi.MMDSConfig{Version: version, NetworkInterfaces: ifaces}); err != nil {
		return err
	}
	if len(mm.Data) == 0 {
		return nil
	}
	return c.PutMMDS(ctx, mm.Data)
}

func (m *Machine) stepVsock(ctx context.Context, c *fcapi.Client) error {
	v := m.cfg.Vsock
	if v == nil {
		return nil
	}
	path, name := runDirPath(&m.cfg, m.apiConfig().Vsock.Path)
	if err := c.PutVsock(ctx, fcapi.Vsock{GuestCID: v.CID, UDSPath: path}); err != nil {
		return err
	}
	m.mu.Lock()
	m.vsockName = name
	m.mu.Unlock()
	return nil
}

func (m *Machine) stepEntropy(ctx context.Context, c *fcapi.Client) error {
	e := m.cfg.Entropy
	if e == nil {
		return nil
	}
	return c.PutEntropy(ctx, fcapi.EntropyDevice{RateLimiter: apiRateLimiter(e.RateLimiter)})
}

func (m *Machine) stepBalloon(ctx context.Context, c *fcapi.Client) error {
	b := m.cfg.Balloon
	if b == nil {
		return nil
	}
	return c.PutBalloon(ctx, fcapi.Balloon{
		AmountMiB:             b.AmountMiB,
		DeflateOnOOM:          b.DeflateOnOOM,
		StatsPollingIntervalS: int(b.StatsInterval / time.Second),
	})
}

func (m *Machine) stepMemoryHotplug(ctx context.Context, c *fcapi.Client) error {
	h := m.cfg.MemoryHotplug
	if h == nil {
		return nil
	}
	return c.PutMemoryHotplug(ctx, fcapi.MemoryHotplugConfig{
		TotalSizeMiB: h.TotalMiB,
		SlotSizeMiB:  h.SlotMiB,
		BlockSizeMiB: h.BlockMiB,
	})
}

func (m *Machine) stepMetrics(ctx context.Context, c *fcapi.Client) error {
	p := m.cfg.MetricsPath
	if p == "" {
		return nil
	}
	if m.cfg.Jailer != nil {
		return nil // the jailer passed --metrics-path, and stageJail made the file
	}
	// Firecracker opens the metrics file but does not create it.
	if _, err := createIfMissing(p); err != nil {
		return fmt.Errorf("create metrics file: %w", err)
	}
	return c.PutMetrics(ctx, fcapi.Metrics{MetricsPath: m.apiConfig().MetricsPath})
}

// apiRateLimiter converts a RateLimiter to the API's (refill in ms).
func apiRateLimiter(r *RateLimiter) *fcapi.RateLimiter {
	if r == nil {
		return nil
	}
	return &fcapi.RateLimiter{Bandwidth: apiBucket(r.Bandwidth), Ops: apiBucket(r.Ops)}
}

func apiBucket(b *TokenBucket) *fcapi.TokenBucket {
	if b == nil {
		return nil
	}
	tb := &fcapi.TokenBucket{Size: b.Size, RefillTime: b.RefillTime.Milliseconds()}
	if b.OneTimeBurst != 0 {
		burst := b.OneTimeBurst
		tb.OneTimeBurst = &burst
	}
	return tb
}
