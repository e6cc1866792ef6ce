package fakefc

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{"1.14.2", Version{1, 14, 2}, false},
		{"v1.7.0", Version{1, 7, 0}, false},
		{"0.25", Version{0, 25, 0}, false},
		{"1", Version{}, true},
		{"1.x.0", Version{}, true},
		{"1.2.3.4", Version{}, true},
		{"", Version{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseVersion(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseVersion(%q) = %v, %v", tt.in, got, err)
			}
		})
	}
	if !(Version{1, 14, 4}).AtLeast(Version{1, 14, 2}) || (Version{1, 9, 0}).AtLeast(Version{1, 10, 0}) {
		t.Errorf("AtLeast ordering wrong")
	}
}

func TestParseSettings(t *testing.T) {
	s, err := ParseSettings("")
	if err != nil || s.Version != DefaultVersion || s.CtrlAltDel != CtrlAltDelExit {
		t.Fatalf("defaults: %+v, %v", s, err)
	}
	s, err = ParseSettings(`{"version":"1.7.0","delay":"5ms","fail":[{"method":"PUT","path":"/drives/rootfs","fault":"x","count":1}],"exit_at":3,"no_socket":true,"die_at_start":true,"stderr":"e","ignore_sigterm":true,"ctrl_alt_del":"ignore"}`)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		Version: Version{1, 7, 0}, Delay: 5 * time.Millisecond,
		Fail:   []Fault{{Method: "PUT", Path: "/drives/rootfs", Status: 400, Message: "x", Count: 1}},
		ExitAt: 3, NoSocket: true, DieAtStart: true, Stderr: "e", IgnoreSIGTERM: true, CtrlAltDel: CtrlAltDelIgnore,
	}
	if s.Version != want.Version || s.Delay != want.Delay || len(s.Fail) != 1 || s.Fail[0] != want.Fail[0] ||
		s.ExitAt != 3 || !s.NoSocket || !s.DieAtStart || s.Stderr != "e" || !s.IgnoreSIGTERM || s.CtrlAltDel != CtrlAltDelIgnore {
		t.Errorf("got %+v, want %+v", s, want)
	}
	again, err := ParseSettings(strings.TrimPrefix(s.Env(), EnvSettings+"="))
	if err != nil || again.Version != s.Version || again.Delay != s.Delay || len(again.Fail) != 1 || again.Fail[0] != s.Fail[0] || again.CtrlAltDel != s.CtrlAltDel || !again.NoSocket {
		t.Errorf("Env round trip: %+v, %v", again, err)
	}
	for _, bad := range []string{`{`, `[]`, `{"versoin":"1.0.0"}`, `{"version":"x"}`, `{"delay":"-1s"}`, `{"fail":[{"path":"/"}]}`, `{"fail":[{"method":"GET","path":"/","status":99}]}`, `{"exit_at":-1}`, `{"ctrl_alt_del":"reboot"}`} {
		if _, err := ParseSettings(bad); !errors.Is(err, ErrBadSettings) {
			t.Errorf("ParseSettings(%s) = %v, want ErrBadSettings", bad, err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	f, err := ParseFlags([]string{"--api-sock", "/s", "--id=vm1", "--log-path", "/l", "--level", "Debug", "--show-level", "--show-log-origin", "--boot-timer", "--no-seccomp", "--http-api-max-payload-size", "1000", "--mmds-size-limit", "2000"})
	if err != nil {
		t.Fatal(err)
	}
	if f.APISock != "/s" || f.ID != "vm1" || f.LogPath != "/l" || f.Level != "Debug" || !f.ShowLevel || !f.ShowLogOrigin || !f.BootTimer || !f.NoSeccomp || f.MaxPayload != 1000 || f.MMDSSizeLimit != 2000 {
		t.Errorf("got %+v", f)
	}
	f, err = ParseFlags(nil)
	if err != nil || f.APISock != DefaultSocket || f.ID != "anonymous-instance" || f.MaxPayload != 51200 {
		t.Errorf("defaults %+v, %v", f, err)
	}
	if _, err := ParseFlags([]string{"--config-file", "x.json"}); !errors.Is(err, ErrNotEmulated) {
		t.Errorf("--config-file: %v, want ErrNotEmulated", err)
	}
	if f, err := ParseFlags([]string{"--help"}); err != nil || !f.Help {
		t.Errorf("--help: %+v, %v", f, err)
	}
	for _, bad := range [][]string{{"--bogus"}, {"stray"}, {"--api-sock"}, {"--id", "a", "--id", "b"}, {"--level", "loud"}, {"--version=1"}, {"--mmds-size-limit", "-3"}} {
		if _, err := ParseFlags(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseFlags(%q) = %v, want ErrUsage", bad, err)
		}
	}
}

// TestFieldIntroductions checks, for each field of the table, that the
// release before it refuses it and its first release accepts it.
func TestFieldIntroductions(t *testing.T) {
	tests := []struct {
		schema       *schema
		base         string // a valid body without the field, as "k":v pairs
		field, value string
		since        string
		before       string
	}{
		{machineConfigSchema, `"vcpu_count":1,"mem_size_mib":64`, "smt", "false", "1.0.0", "0.25.2"},
		{machineConfigSchema, `"vcpu_count":1,"mem_size_mib":64`, "huge_pages", `"2M"`, "1.7.0", "1.6.0"},
		{driveSchema, `"drive_id":"d","path_on_host":"p","is_root_device":false,"is_read_only":false`, "io_engine", `"Async"`, "1.0.0", "0.25.2"},
		{driveSchema, `"drive_id":"d","path_on_host":"p","is_root_device":false,"is_read_only":false`, "socket", `"s"`, "1.6.0", "1.5.1"},
		{loggerSchema, `"log_path":"l"`, "module", `"m"`, "1.6.0", "1.5.1"},
		{netSchema, `"iface_id":"e","host_dev_name":"t"`, "mtu", "1500", "1.16.0", "1.15.1"},
		{mmdsConfigSchema, `"network_interfaces":["e"]`, "imds_compat", "true", "1.13.0", "1.12.1"},
		{balloonSchema, `"amount_mib":1,"deflate_on_oom":true`, "free_page_hinting", "true", "1.14.0", "1.13.2"},
		{snapshotLoadSchema, `"snapshot_path":"s","mem_file_path":"m"`, "mem_backend", `{"backend_type":"File","backend_path":"m"}`, "1.1.0", "1.0.2"},
		{snapshotLoadSchema, `"snapshot_path":"s","mem_file_path":"m"`, "network_overrides", `[{"iface_id":"e","host_dev_name":"t"}]`, "1.12.0", "1.11.0"},
		{snapshotLoadSchema, `"snapshot_path":"s","mem_file_path":"m"`, "track_dirty_pages", "true", "1.13.0", "1.12.1"},
		{snapshotLoadSchema, `"snapshot_path":"s","mem_file_path":"m"`, "clock_realtime", "true", "1.14.4", "1.14.3"},
		{snapshotLoadSchema, `"snapshot_path":"s","mem_file_path":"m"`, "vsock_override", `{"uds_path":"v"}`, "1.16.0", "1.15.1"},
		{cpuConfigSchema, `"cpuid_modifiers":[]`, "vcpu_features", "[]", "1.11.0", "1.10.1"},
		{serialSchema, `"serial_out_path":"s"`, "rate_limiter", "{}", "1.16.0", "1.15.1"},
		{pmemSchema, `"id":"p","path_on_host":"f"`, "rate_limiter", "{}", "1.16.0", "1.15.1"},
	}
	for _, tt := range tests {
		t.Run(tt.schema.name+"."+tt.field, func(t *testing.T) {
			body := []byte("{" + tt.base + `,"` + tt.field + `":` + tt.value + "}")
			if _, err := decodeBody(body, tt.schema, mustVersion(tt.since), false); err != nil {
				t.Errorf("v%s refused %s: %v", tt.since, body, err)
			}
			_, err := decodeBody(body, tt.schema, mustVersion(tt.before), false)
			var de *decodeError
			if !errors.As(err, &de) || !strings.Contains(de.msg, "unknown field `"+tt.field+"`") {
				t.Errorf("v%s: %v, want unknown field", tt.before, err)
			}
		})
	}
}

func TestDecodeBodyErrors(t *testing.T) {
	v := DefaultVersion
	tests := []struct {
		body string
		want string
	}{
		{`{"vcpu_count":1,"mem_size_mib":64,"bogus":1}`, "unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, `cpu_template`, `track_dirty_pages`, `huge_pages` at line 1 column 41"},
		{`{"vcpu_count":1}`, "missing field `mem_size_mib` at line 1 column 16"},
		{`{"vcpu_count":1,"vcpu_count":2,"mem_size_mib":64}`, "duplicate field `vcpu_count`"},
		{`{"vcpu_count":-1,"mem_size_mib":64}`, "invalid value: integer `-1`, expected u8 at line 1 column 16"},
		{`{"vcpu_count":256,"mem_size_mib":64}`, "invalid value: integer `256`, expected u8"},
		{`{"vcpu_count":true,"mem_size_mib":64}`, "invalid type: boolean `true`, expected u8 at line 1 column 18"},
		{`{"vcpu_count":1.5,"mem_size_mib":64}`, "invalid type: floating point `1.5`"},
		{`{"vcpu_count":1,"mem_size_mib":64,"smt":"yes"}`, "invalid type: string \"yes\", expected a boolean"},
		{`{"vcpu_count":1,"mem_size_mib":64,"cpu_template":"Z9"}`, "unknown variant `Z9`"},
		{`[1]`, "invalid length 1, expected struct MachineConfig with 6 elements"},
		{`[1,2,false,"C3",false,"None",7]`, "trailing characters"},
		{`"s"`, "invalid type: string \"s\", expected struct MachineConfig at line 1 column 3"},
		{`{"vcpu_count":1,"mem_size_mib":64} x`, "trailing characters"},
		{``, "EOF while parsing a value"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			_, err := decodeBody([]byte(tt.body), machineConfigSchema, v, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := decodeBody([]byte(`{"smt":true,"cpu_template":null}`), machineConfigSchema, v, true); err != nil {
		t.Errorf("partial body refused: %v", err)
	}
	if o, err := decodeBody([]byte(`[2,64]`), machineConfigSchema, v, false); err != nil || num(o, "mem_size_mib") != 64 {
		t.Errorf("struct as a sequence: %v, %v", o, err)
	}
}

func TestView(t *testing.T) {
	o, err := decodeBody([]byte(`{"vcpu_count":2,"mem_size_mib":64}`), machineConfigSchema, Version{1, 7, 0}, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := view(machineConfigSchema, o, Version{1, 7, 0}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"vcpu_count":2,"mem_size_mib":64,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`; string(b) != want {
		t.Errorf("view = %s, want %s", b, want)
	}
}

func FuzzDecodeBody(f *testing.F) {
	f.Add([]byte(`{"vcpu_count":1,"mem_size_mib":64}`), "1.14.2")
	f.Add([]byte(`{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"},"network_overrides":[{"iface_id":"e","host_dev_name":"t"}]}`), "1.16.1")
	f.Add([]byte(`{"rate_limiter":{"bandwidth":{"size":1,"refill_time":2}}}`), "1.4.0")
	f.Fuzz(func(t *testing.T, body []byte, version string) {
		v, err := ParseVersion(version)
		if err != nil {
			return
		}
		for _, s := range []*schema{machineConfigSchema, driveSchema, snapshotLoadSchema, entropySchema, cpuConfigSchema} {
			o, err := decodeBody(body, s, v, false)
			if err != nil {
				continue
			}
			if _, err := view(s, o, v).MarshalJSON(); err != nil {
				t.Errorf("view of accepted body %q: %v", body, err)
			}
		}
	})
}

func FuzzParseSettings(f *testing.F) {
	f.Add(`{"version":"1.7.0","delay":"5ms","fail":[{"method":"PUT","path":"/x","count":1}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSettings(s)
		if err != nil {
			return
		}
		if got.CtrlAltDel != CtrlAltDelExit && got.CtrlAltDel != CtrlAltDelIgnore {
			t.Errorf("ctrl_alt_del %q accepted", got.CtrlAltDel)
		}
		for _, fl := range got.Fail {
			if fl.Status < 100 || fl.Status > 599 {
				t.Errorf("status %d accepted", fl.Status)
			}
		}
	})
}
