package monitor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/errdefs"
)

// An error of the monitor keeps its kind across the start report.
func TestReportKeepsKind(t *testing.T) {
	for _, k := range errorKinds {
		err := Report{Error: "boom", Kind: KindCode(fmt.Errorf("x: %w", k.err))}.Err()
		if !errors.Is(err, k.err) || err.Error() != "boom" {
			t.Errorf("%s: rebuilt %v, matching %v: %v", k.code, err, k.err, errors.Is(err, k.err))
		}
	}
	if err := (Report{Error: "plain"}).Err(); errors.Is(err, errdefs.ErrNotFound) || err.Error() != "plain" {
		t.Errorf("an error of no kind rebuilt as %v", err)
	}
	if err := (Report{}).Err(); err != nil {
		t.Errorf("a report of success rebuilt as %v", err)
	}
}

// The monitor changes the fields it owns and keeps every other as read.
func TestRecordKeepsOtherFields(t *testing.T) {
	var r record
	in := `{"id":"a","spec":{"cpus":2,"future_field":[1,2]},"status":"starting","net_active":true,"network":null,"taps":[{"name":"t0","mac":"m","owned":true}]}`
	if err := jsonUnmarshal(in, &r); err != nil {
		t.Fatal(err)
	}
	var taps []Tap
	if err := r.get("taps", &taps); err != nil || len(taps) != 1 || !taps[0].Owned || taps[0].Name != "t0" {
		t.Fatalf("taps = %+v, %v", taps, err)
	}
	var missing Exit
	if err := r.get("exit", &missing); err != nil || missing != (Exit{}) {
		t.Fatalf("a missing field decoded as %+v, %v", missing, err)
	}
	if !r.held("net_active") || r.held("network") || r.held("auto_remove") {
		t.Errorf("held: net_active %v, network %v, auto_remove %v; want true, false, false", r.held("net_active"), r.held("network"), r.held("auto_remove"))
	}
	if err := r.set("status", StatusExited); err != nil {
		t.Fatal(err)
	}
	out := jsonMarshal(t, r)
	for _, want := range []string{`"spec":{"cpus":2,"future_field":[1,2]}`, `"status":"exited"`, `"id":"a"`} {
		if !strings.Contains(out, want) {
			t.Errorf("saved record %s lacks %s", out, want)
		}
	}
	if err := r.set("status", func() {}); err == nil {
		t.Error("set of a value JSON cannot encode gave no error")
	}
	r["exit"] = []byte(`"not an object"`)
	if err := r.get("exit", &missing); err == nil || !strings.Contains(err.Error(), `"exit"`) {
		t.Errorf("a malformed field gave %v; want an error naming it", err)
	}
}

// A plan of another version, or not a plan at all, is refused with a
// message that says what to do.
func TestReadPlan(t *testing.T) {
	for _, tc := range []struct {
		name, plan, want string
		kind             error
	}{
		{"other version", `{"version":99,"run_dir":"/x","console":"c"}`, "install kindling-monitor from the same build", errdefs.ErrInvalid},
		{"not JSON", `{`, "monitor plan", errdefs.ErrCorrupt},
		{"empty", ``, "monitor plan", errdefs.ErrCorrupt},
		{"no run dir", `{"version":3,"console":"c","command":{"path":"/fc"}}`, "no run directory", errdefs.ErrCorrupt},
		{"no command", `{"version":3,"run_dir":"/x","console":"c"}`, "no VMM command", errdefs.ErrCorrupt},
		{"jailed as root", `{"version":3,"run_dir":"/x","command":{"path":"/j"},"console":"c","jail":{}}`, "no uid of its own", errdefs.ErrInvalid},
		{"jail path not clean", `{"version":3,"run_dir":"/x","command":{"path":"/j"},"console":"c","jail":{"uid":7,"chroots":["/srv/../etc"]}}`, "not a clean absolute path", errdefs.ErrCorrupt},
		{"jail path relative", `{"version":3,"run_dir":"/x","command":{"path":"/j"},"console":"c","jail":{"uid":7,"parents":["srv"]}}`, "not a clean absolute path", errdefs.ErrCorrupt},
		{"writable path relative", `{"version":3,"run_dir":"/x","command":{"path":"/j"},"console":"c","jail":{"uid":7,"writable":["d.img"]}}`, "not a clean absolute path", errdefs.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := planFile(t, tc.plan)
			_, err := readPlan(f)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.kind) {
				t.Fatalf("readPlan = %v; want an error matching %v with %q", err, tc.kind, tc.want)
			}
		})
	}
	p, err := readPlan(planFile(t, `{"version":3,"run_dir":"/x","command":{"path":"/fc","args":["--api-sock","/x/s"]},"console":"console.log","helper":"/k","dns":true}`))
	if err != nil || p.Command.Path != "/fc" || len(p.Command.Args) != 2 || p.Console != "console.log" || p.Helper != "/k" || !p.DNS || p.Jail != nil {
		t.Fatalf("readPlan = %+v, %v", p, err)
	}
	p, err = readPlan(planFile(t, `{"version":3,"run_dir":"/x","command":{"path":"/j"},"console":"c","jail":{"uid":7,"chroots":["/srv/a/b"],"id_file":"/run/r/7","id_lock":"/run/r/.lock"}}`))
	if err != nil || p.Jail == nil || len(p.Jail.Chroots) != 1 || p.Jail.IDFile != "/run/r/7" || p.Jail.UID != 7 {
		t.Fatalf("readPlan of a jailed plan = %+v, %v", p, err)
	}
}

func planFile(t *testing.T, s string) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plan")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
