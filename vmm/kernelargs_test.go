package vmm

import (
	"strings"
	"testing"
)

func TestMergeKernelArgs(t *testing.T) {
	tests := []struct {
		name           string
		defaults, user string
		want           string
	}{
		{"both empty", "", "", ""},
		{"defaults only", "a=1 b", "", "a=1 b"},
		{"user only", "", "a=1 b", "a=1 b"},
		{"user wins in place", "a=1 b=2 c=3", "b=9", "a=1 b=9 c=3"},
		{"new keys appended in order", "a=1", "z=1 y=2", "a=1 z=1 y=2"},
		{"bare flag kept once", "quiet a=1", "quiet", "quiet a=1"},
		{"flag replaced by value", "a b=1", "a=2", "a=2 b=1"},
		{"white space normalised", "  a=1\t\tb=2\n", " c=3  ", "a=1 b=2 c=3"},
		{"repeated default key kept", "console=ttyS0 console=tty0 x", "", "console=ttyS0 console=tty0 x"},
		{"repeated default key replaced at first place", "console=ttyS0 x console=tty0", "console=hvc0", "console=hvc0 x"},
		{"repeated user key kept together", "a=1", "k=1 j=2 k=3", "a=1 k=1 k=3 j=2"},
		{"dash and underscore alike", "random.trust_cpu=on", "random.trust-cpu=off", "random.trust-cpu=off"},
		{"ro replaces rw", "root=/dev/vda rw", "ro", "root=/dev/vda ro"},
		{"rw replaces ro", "ro x", "rw", "rw x"},
		{"ro with value is its own key", "rw", "ro=1", "rw ro=1"},
		{"quoted value with spaces", `a=1`, `init="/bin/sh -c 'x y'"`, `a=1 init="/bin/sh -c 'x y'"`},
		{"quoted value replaces", `init="/a b" z`, `init=/c`, `init=/c z`},
		{"quoted whole parameter", `"dyndbg=file a.c +p" x`, `dyndbg=+p`, `dyndbg=+p x`},
		{"unbalanced quote closed", `a="x y`, `b=1`, `a="x y" b=1`},
		{"init args kept at end", "a=1 -- -s", "b=2", "a=1 b=2 -- -s"},
		{"user init args after defaults'", "a=1 -- one", "b=2 -- two three", "a=1 b=2 -- one two three"},
		{"init args are not merged", "-- a=1", "-- a=2", "-- a=1 a=2"},
		{"user key after separator not a param", "a=1", "-- a=2", "a=1 -- a=2"},
		{"lone separator kept", "a", "--", "a --"},
		{"second separator is an init arg", "", "x -- y -- z", "x -- y -- z"},
		{"quoted separator is a param", "", `"--" x`, `"--" x`},
		{"default args with user", DefaultKernelArgs, "console=hvc0 quiet panic=0",
			"console=hvc0 reboot=k panic=0 pci=off iommu=off net.ifnames=0 random.trust_cpu=on acpi=off quiet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MergeKernelArgs(tt.defaults, tt.user)
			if got != tt.want {
				t.Fatalf("MergeKernelArgs(%q, %q) = %q, want %q", tt.defaults, tt.user, got, tt.want)
			}
			if again := MergeKernelArgs(got, ""); again != got {
				t.Errorf("merging the result with \"\" gave %q, want %q", again, got)
			}
			if twice := MergeKernelArgs(got, tt.user); !strings.Contains(tt.user, "--") && twice != got {
				t.Errorf("merging user again gave %q, want %q", twice, got)
			}
		})
	}
}

func TestDefaultKernelArgs(t *testing.T) {
	params, _, _ := splitKernelArgs(DefaultKernelArgs)
	has := map[string]string{}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		has[k] = v
	}
	if has["console"] != "ttyS0" {
		t.Errorf("DefaultKernelArgs has console=%q, want ttyS0 (kindling captures the serial console)", has["console"])
	}
	if _, ok := has["8250.nr_uarts"]; ok {
		t.Error("DefaultKernelArgs sets 8250.nr_uarts, which silences the serial console")
	}
	for _, k := range []string{"reboot", "panic", "pci", "iommu", "net.ifnames", "random.trust_cpu", "acpi"} {
		if _, ok := has[k]; !ok {
			t.Errorf("DefaultKernelArgs lacks %s=", k)
		}
	}
}

func TestBootArgs(t *testing.T) {
	tests := []struct {
		name   string
		drives []Drive
		user   string
		want   string // appended to DefaultKernelArgs
	}{
		{"no drives", nil, "", ""},
		{"no root drive", []Drive{{ID: "data", Path: "/d"}}, "", ""},
		{"root read-write", []Drive{{ID: "data", Path: "/d"}, {ID: "root", Path: "/r", Root: true}}, "", " root=/dev/vda rw"},
		{"root read-only", []Drive{{ID: "root", Path: "/r", Root: true, ReadOnly: true}}, "", " root=/dev/vda ro"},
		{"root partition", []Drive{{ID: "root", Path: "/r", Root: true, PartUUID: "0eaa91a0-01"}}, "", " root=PARTUUID=0eaa91a0-01 rw"},
		{"user root wins", []Drive{{ID: "root", Path: "/r", Root: true}}, "root=/dev/vdb", " root=/dev/vdb rw"},
		{"user ro wins", []Drive{{ID: "root", Path: "/r", Root: true}}, "ro", " root=/dev/vda ro"},
		{"user args appended", nil, "quiet -- init", " quiet -- init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Drives: tt.drives, KernelArgs: tt.user}
			if got, want := c.BootArgs(), DefaultKernelArgs+tt.want; got != want {
				t.Fatalf("BootArgs() = %q, want %q", got, want)
			}
		})
	}
}

func FuzzMergeKernelArgs(f *testing.F) {
	f.Add(DefaultKernelArgs, "console=hvc0 quiet")
	f.Add(`a="b c" d`, `"e=f g" -- h "i`)
	f.Add("ro -- --", "rw root=/dev/vda")
	f.Add("a-b=1 a_b=2", "\"\t\"=\"\n")
	f.Add(`"`, `=`)
	f.Fuzz(func(t *testing.T, defaults, user string) {
		got := MergeKernelArgs(defaults, user)
		if again := MergeKernelArgs(got, ""); again != got {
			t.Fatalf("not idempotent: MergeKernelArgs(%q, \"\") = %q", got, again)
		}
		if _, _, sep := splitKernelArgs(user); !sep {
			if again := MergeKernelArgs(got, user); again != got {
				t.Fatalf("merging user %q again over %q gave %q", user, got, again)
			}
		}
		if strings.Count(got, `"`)%2 != 0 {
			t.Fatalf("unbalanced quotes in %q", got)
		}
		// Every parameter user gives outside init args appears in the result.
		uParams, _, _ := splitKernelArgs(user)
		words := map[string]bool{}
		for _, w := range kernelWords(got) {
			words[w] = true
		}
		for _, p := range uParams {
			if !words[p] {
				t.Fatalf("user parameter %q missing from %q", p, got)
			}
		}
	})
}
