package shim

import (
	"slices"
	"strings"
	"testing"
)

func TestCheckStdioAndLogURIs(t *testing.T) {
	fifo := "/run/containerd/fifo/1/x-stdout"
	tests := []struct {
		name                  string
		stdin, stdout, stderr string
		want                  string // "" for accepted
	}{
		{"fifos", fifo, fifo, fifo, ""},
		{"none", "", "", "", ""},
		{"file", "", "file:///var/log/x.log", "file:///var/log/x.log", ""},
		{"binary", "", "binary:///usr/bin/logger?a=b", "binary:///usr/bin/logger?a=b", ""},
		{"terminal, stderr empty", "", "file:///x.log", "", ""},
		{"relative file", "", "file://x.log", "file://x.log", "want an absolute path"},
		{"other scheme", "", "tcp:///x", "tcp:///x", `unknown scheme "tcp"`},
		{"stdin a URI", "file:///x", fifo, fifo, "stdin"},
		{"two URIs", "", "file:///a", "file:///b", "give both the same log URI"},
		{"URI and FIFO", "", "file:///a", fifo, "give both the same log URI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkStdio(tt.stdin, tt.stdout, tt.stderr)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("checkStdio = %v, want %q", err, tt.want)
			}
		})
	}
	u, ok, err := parseLogURI("binary:///usr/bin/logger?b=2&a=1")
	if err != nil || !ok || u.path != "/usr/bin/logger" || !slices.Equal(u.args, []string{"a", "1", "b", "2"}) {
		t.Errorf("parseLogURI = %+v, %v, %v; want /usr/bin/logger with arguments a 1 b 2", u, ok, err)
	}
}
