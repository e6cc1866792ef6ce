package sandbox

import (
	"errors"
	"testing"
)

func TestApplyAgentDefaults(t *testing.T) {
	root := &Disk{Path: "/r.ext4"}
	tests := []struct {
		name    string
		in      Spec
		agent   bool
		cid     uint32
		args    string
		wantErr bool
	}{
		{"no agent", Spec{Kernel: "k", Rootfs: root, KernelArgs: "init=/sbin/init"}, false, 0, "init=/sbin/init", false},
		{"flag", Spec{Kernel: "k", Rootfs: root, Agent: true}, true, DefaultAgentCID, "init=" + AgentInit, false},
		{"flag keeps the init and CID", Spec{Kernel: "k", Rootfs: root, Agent: true, VsockCID: 9, KernelArgs: "quiet init=/sbin/init"}, true, 9, "quiet init=/sbin/init", false},
		{"implied by init=", Spec{Kernel: "k", Rootfs: root, KernelArgs: "init=/sbin/kindling-agent"}, true, DefaultAgentCID, "init=/sbin/kindling-agent", false},
		{"the last init= counts", Spec{Kernel: "k", Rootfs: root, KernelArgs: "init=/sbin/kindling-agent init=/sbin/init"}, false, 0, "init=/sbin/kindling-agent init=/sbin/init", false},
		{"not after --", Spec{Kernel: "k", Rootfs: root, KernelArgs: "quiet -- init=/x/kindling-agent"}, false, 0, "quiet -- init=/x/kindling-agent", false},
		{"demo guest", Spec{Agent: true, Rootfs: root}, false, 0, "", true},
		{"no rootfs", Spec{Kernel: "k", Agent: true}, false, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.in
			err := applyAgentDefaults(&s)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidSpec) {
					t.Fatalf("err = %v, want ErrInvalidSpec", err)
				}
				return
			}
			if err != nil || s.Agent != tt.agent || s.VsockCID != tt.cid || s.KernelArgs != tt.args {
				t.Fatalf("got agent %v, cid %d, args %q, %v; want %v, %d, %q", s.Agent, s.VsockCID, s.KernelArgs, err, tt.agent, tt.cid, tt.args)
			}
		})
	}
}

func TestGuestHostname(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "a_b.c": "a-b.c"} {
		if got := guestHostname(in); got != want {
			t.Errorf("guestHostname(%q) = %q, want %q", in, got, want)
		}
	}
}
