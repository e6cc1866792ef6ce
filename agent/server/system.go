package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// System is what the agent changes on the machine when the host re-inits
// it after a boot, a restore or a clone: the clock, the kernel's entropy
// pool and the hostname. The guest agent uses GuestSystem; an agent serving
// on a host uses HostSystem, which changes nothing; tests record the calls.
type System interface {
	// SetClock sets the wall clock.
	SetClock(t time.Time) error
	// AddEntropy mixes b into the kernel's entropy pool and credits it.
	AddEntropy(b []byte) error
	// SetHostname sets the machine's hostname.
	SetHostname(name string) error
}

// GuestSystem changes the machine the agent runs on. It needs root
// (CAP_SYS_TIME, CAP_SYS_ADMIN).
type GuestSystem struct{}

var _ System = GuestSystem{}

// SetClock sets CLOCK_REALTIME.
func (GuestSystem) SetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	return nil
}

// AddEntropy writes b into /dev/random's pool with the RNDADDENTROPY ioctl,
// crediting 8 bits per byte: the host's bytes come from its own CSPRNG, and
// a clone must not wait for (or reuse) its parent's pool.
func (GuestSystem) AddEntropy(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	defer f.Close()
	buf := randPoolInfo(b)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("add entropy: ioctl RNDADDENTROPY: %w", errno)
	}
	return nil
}

// randPoolInfo lays out struct rand_pool_info for RNDADDENTROPY:
// int entropy_count (bits credited), int buf_size (bytes), then the bytes,
// padded to whole 32-bit words.
func randPoolInfo(b []byte) []byte {
	words := (len(b) + 3) / 4
	buf := make([]byte, 8+4*words)
	binary.NativeEndian.PutUint32(buf[0:], uint32(8*len(b)))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(b)))
	copy(buf[8:], b)
	return buf
}

// SetHostname calls sethostname.
func (GuestSystem) SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set hostname %q: %w", name, err)
	}
	return nil
}

// HostSystem is the System of an agent serving on a host (for tests and
// development): it leaves the host's clock, entropy pool and hostname alone
// and reports that it did.
type HostSystem struct{}

var _ System = HostSystem{}

// ErrUnchanged is returned by a System that deliberately leaves something
// alone; /init logs it and goes on.
var ErrUnchanged = errors.New("left unchanged")

// errHostMode is what HostSystem returns.
var errHostMode = fmt.Errorf("agent runs on a host: machine %w", ErrUnchanged)

func (HostSystem) SetClock(time.Time) error { return errHostMode }
func (HostSystem) AddEntropy([]byte) error  { return errHostMode }
func (HostSystem) SetHostname(string) error { return errHostMode }

// SimulatedSystem is the System of an agent in a simulated guest (see
// cmd/kindling-agent): it sets the hostname (its own UTS namespace) and
// feeds the entropy pool, but leaves the clock alone, which is the host's
// own (Linux has no namespace for CLOCK_REALTIME).
type SimulatedSystem struct{ GuestSystem }

var _ System = SimulatedSystem{}

// SetClock refuses: the clock is the host's.
func (SimulatedSystem) SetClock(time.Time) error {
	return fmt.Errorf("simulated guest: the clock is the host's, %w", ErrUnchanged)
}
