package fakefc

import (
	"errors"
	"slices"
	"testing"
)

func TestParseJailerFlags(t *testing.T) {
	base := []string{"--id", "vm", "--exec-file", "/bin/firecracker", "--uid", "7", "--gid", "8"}
	f, err := ParseJailerFlags(append(base, "--cgroup-version", "2", "--cgroup", "cpu.max=1 2", "--parent-cgroup", "k1", "--", "--api-sock", "/s"))
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != "vm" || f.UID != 7 || f.GID != 8 || f.CgroupVersion != 2 || f.ParentCgroup != "k1" ||
		!slices.Equal(f.Cgroups, []string{"cpu.max=1 2"}) || !slices.Equal(f.Args, []string{"--api-sock", "/s"}) {
		t.Errorf("ParseJailerFlags() = %+v", f)
	}
	if f, _ := ParseJailerFlags(base); f.ParentCgroup != "firecracker" || f.ChrootBase != "/srv/jailer" || f.CgroupVersion != 1 {
		t.Errorf("defaults = %+v, want the real jailer's", f)
	}
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"missing uid", []string{"--id", "vm", "--exec-file", "/bin/firecracker", "--gid", "1"}, ErrUsage},
		{"exec not firecracker", []string{"--id", "vm", "--exec-file", "/bin/sh", "--uid", "1", "--gid", "1"}, ErrUsage},
		{"unknown flag", append(base, "--nope", "x"), ErrUsage},
		{"bad cgroup version", append(base, "--cgroup-version", "3"), ErrUsage},
		{"new pid ns", append(base, "--new-pid-ns"), ErrNotEmulated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseJailerFlags(tt.args); !errors.Is(err, tt.want) {
				t.Errorf("ParseJailerFlags(%q) = %v, want %v", tt.args, err, tt.want)
			}
		})
	}
}
