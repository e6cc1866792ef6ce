package sandbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
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

// TestGuestWithoutAgent checks the errors of guest calls on sandboxes
// that cannot have an agent answering: they come at once and say why.
func TestGuestWithoutAgent(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	if _, err := r.Exec(ctx, "nosuch", ExecRequest{Args: []string{"true"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("exec in a missing sandbox: %v, want ErrNotFound", err)
	}
	for _, tc := range []struct {
		id    string
		vsock uint32
		want  error
		says  string
	}{
		{"novsock", 0, ErrNotSupported, "no vsock device"},
		{"noagent", 3, ErrUnavailable, "nothing answers on vsock port 49983"},
	} {
		if _, err := r.Create(ctx, Spec{ID: tc.id, Kernel: haltGuest(t, "up"), Firecracker: fc, VsockCID: tc.vsock}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer r.Remove(ctx, tc.id, true)
		if _, err := r.Exec(ctx, tc.id, ExecRequest{Args: []string{"true"}}); !errors.Is(err, ErrInvalidState) {
			t.Errorf("exec in created sandbox %s: %v, want ErrInvalidState", tc.id, err)
		}
		if _, err := r.Start(ctx, tc.id); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := r.Exec(ctx, tc.id, ExecRequest{Args: []string{"true"}})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "the guest has no kindling-agent") {
			t.Errorf("exec in %s: %v, want %v saying %q", tc.id, err, tc.want, tc.says)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("exec in %s took %v to fail: want at once", tc.id, d)
		}
		if _, err := r.StatFile(ctx, tc.id, "/", FileOptions{}); !errors.Is(err, tc.want) {
			t.Errorf("stat in %s: %v, want %v", tc.id, err, tc.want)
		}
	}
}
