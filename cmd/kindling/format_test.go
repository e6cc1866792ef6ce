package main

import (
	"bytes"
	"testing"
	"text/template"
)

func TestFormatWriter(t *testing.T) {
	tests := []struct {
		name, tmpl, in, want string
		wantErr              bool
	}{
		{"object", "{{.id}}", `{"id": "web", "n": 1}` + "\n", "web\n", false},
		{"array", "{{.id}}={{.status}}", `[{"id": "a", "status": "running"}, {"id": "b", "status": "exited"}]`, "a=running\nb=exited\n", false},
		{"json lines", "{{.event}}", "{\"event\":\"a\"}\n{\"event\":\"b\"}\n", "a\nb\n", false},
		{"nested and json func", "{{.exit.code}} {{json .spec}}", `{"exit": {"code": 3}, "spec": {"cpus": 2}}`, "3 {\"cpus\":2}\n", false},
		{"strings", "<{{.}}>", `["a", "b"]`, "<a>\n<b>\n", false},
		{"empty array", "{{.id}}", `[]`, "", false},
		{"not JSON passes", "{{.id}}", "plain text\n", "plain text\n", false},
		{"missing key", "{{.nope}}", `{"id": "web"}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tm := template.Must(template.New("t").Option("missingkey=error").Funcs(formatFuncs).Parse(tt.tmpl))
			_, err := (&formatWriter{w: &out, t: tm}).Write([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Write error = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && out.String() != tt.want {
				t.Errorf("wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}
