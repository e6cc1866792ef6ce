package network

import (
	"errors"
	"testing"
)

// Only a slot's guest is given a forwarder: anything else is refused
// before a socket is opened.
func TestStartSandboxDNSNeedsSlot(t *testing.T) {
	for _, rec := range []*Record{nil, {SandboxID: "x", CNI: &CNIAttachment{SandboxID: "x"}}} {
		stop, err := StartSandboxDNS(SandboxDNS{Record: rec})
		if !errors.Is(err, ErrNotSupported) || stop != nil {
			t.Errorf("record %+v: stop %v, err %v; want ErrNotSupported", rec, stop != nil, err)
		}
	}
}
