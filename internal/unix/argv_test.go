package unix

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// envSetArgChild makes the test binary a child that sets its argument 1 to
// the variable's value and prints its command line as /proc shows it.
const envSetArgChild = "KINDLING_TEST_SETARG"

func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv(envSetArgChild); ok {
		if err := SetArg(1, v); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		b, _ := os.ReadFile("/proc/self/cmdline")
		os.Stdout.Write(b)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSetArg(t *testing.T) {
	pad := strings.Repeat(" ", 20)
	run := func(value string) (string, error) {
		cmd := exec.Command(os.Args[0], "spare"+pad, "-tail")
		cmd.Env = append(os.Environ(), envSetArgChild+"="+value)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return stderr.String(), err
		}
		return string(out), nil
	}
	got, err := run("abc123")
	if err != nil {
		t.Fatalf("child: %v: %s", err, got)
	}
	args := strings.Split(strings.TrimSuffix(got, "\x00"), "\x00")
	if len(args) < 3 || args[1] != "abc123" || args[len(args)-1] != "-tail" {
		t.Fatalf("command line after SetArg(1, abc123) = %q, want argument 1 abc123 and the last -tail", args)
	}
	// The argument's 25 bytes: "abc123" and 19 NULs, then the next one.
	if want := "abc123" + strings.Repeat("\x00", 20-1) + "\x00-tail\x00"; !strings.HasSuffix(got, want) {
		t.Errorf("command line = %q, want it to end with %q", got, want)
	}

	if out, err := run(strings.Repeat("x", 26)); err == nil || !strings.Contains(out, "does not fit") {
		t.Errorf("a value longer than the argument: err %v, stderr %q; want a refusal", err, out)
	}
}
