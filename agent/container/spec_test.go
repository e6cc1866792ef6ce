package container

import (
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	ok := Spec{ID: "c1", Args: []string{"/bin/app"}, Rootfs: Rootfs{Device: "/dev/vdb"}}
	tests := []struct {
		name string
		edit func(*Spec)
		run  bool
		want string
	}{
		{"run ok", func(*Spec) {}, true, ""},
		{"exec needs no rootfs", func(s *Spec) { s.Rootfs = Rootfs{} }, false, ""},
		{"empty id", func(s *Spec) { s.ID = "" }, true, "container id"},
		{"dotted id", func(s *Spec) { s.ID = ".." }, true, "container id"},
		{"slash in id", func(s *Spec) { s.ID = "a/b" }, true, "container id"},
		{"no args", func(s *Spec) { s.Args = nil }, true, "no command"},
		{"relative cwd", func(s *Spec) { s.Cwd = "tmp" }, true, "not absolute"},
		{"bad rlimit", func(s *Spec) { s.Rlimits = []Rlimit{{Type: "RLIMIT_BOGUS"}} }, true, "unknown rlimit"},
		{"no rootfs", func(s *Spec) { s.Rootfs = Rootfs{} }, true, "exactly one of rootfs"},
		{"two rootfs", func(s *Spec) { s.Rootfs.Dir = "/x" }, true, "exactly one of rootfs"},
		{"bind mount without source", func(s *Spec) { s.Mounts = []Mount{{Destination: "/x", Type: "bind"}} }, true, "clean absolute path"},
		{"bind mount of a relative source", func(s *Spec) { s.Mounts = []Mount{{Destination: "/x", Type: "bind", Source: "run/v"}} }, true, "clean absolute path"},
		{"bind mount", func(s *Spec) { s.Mounts = []Mount{{Destination: "/x", Type: "bind", Source: "/run/v"}} }, true, ""},
		{"overlay mount", func(s *Spec) { s.Mounts = []Mount{{Destination: "/x", Type: "overlay"}} }, true, "tmpfs or bind"},
		{"mount on /", func(s *Spec) { s.Mounts = []Mount{{Destination: "/", Type: "tmpfs"}} }, true, "other than /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.edit(&s)
			err := s.Validate(tt.run)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSpecRoundTrip(t *testing.T) {
	s := Spec{ID: "c1", Args: []string{"a", "b c"}, Env: []string{"X=1"}, UID: 3, Rootfs: Rootfs{Dir: "/r", ReadOnly: true},
		Rlimits: []Rlimit{{Type: "RLIMIT_NOFILE", Hard: 10, Soft: 5}}, Mounts: []Mount{{Destination: "/t", Type: "tmpfs", Options: []string{"size=1m"}}}}
	arg, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(arg)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != s.ID || strings.Join(got.Args, "|") != "a|b c" || got.UID != 3 || !got.Rootfs.ReadOnly || got.Rlimits[0].Soft != 5 || got.Mounts[0].Options[0] != "size=1m" {
		t.Errorf("round trip = %+v, want %+v", got, s)
	}
	if _, err := Decode(`{"id":"c1","args":["x"],"bogus":1}`); err == nil {
		t.Error("Decode accepted an unknown field")
	}
}
