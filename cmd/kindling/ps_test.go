package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/sandbox"
)

func TestPsFilter(t *testing.T) {
	tests := []struct {
		flags    []string
		statuses string
		labels   map[string]string
		wantErr  string
	}{
		{flags: []string{"status=exited"}, statuses: "exited"},
		{flags: []string{"status=exited", "status=created"}, statuses: "exited created"},
		{flags: []string{"status=exited,label=app=web"}, statuses: "exited", labels: map[string]string{"app": "web"}},
		{flags: []string{"label=note=a,b"}, labels: map[string]string{"note": "a,b"}}, // a comma in a value
		{flags: []string{"label=note=a,b,status=running"}, statuses: "running", labels: map[string]string{"note": "a,b"}},
		{flags: []string{"status=dead"}, wantErr: `unknown status "dead"`},
		{flags: []string{"name=web"}, wantErr: `unknown key "name"`},
		{flags: []string{"web"}, wantErr: `give status=STATUS or label=KEY=VALUE`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.flags, " "), func(t *testing.T) {
			var f psFilter
			var err error
			for _, s := range tt.flags {
				if err = f.Set(s); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Set = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range f.statuses {
				got = append(got, string(s))
			}
			if strings.Join(got, " ") != tt.statuses {
				t.Errorf("statuses %v, want %q", got, tt.statuses)
			}
			if len(f.labels.m) != len(tt.labels) {
				t.Errorf("labels %v, want %v", f.labels.m, tt.labels)
			}
			for k, v := range tt.labels {
				if f.labels.m[k] != v {
					t.Errorf("label %s = %q, want %q", k, f.labels.m[k], v)
				}
			}
		})
	}
}

func TestPsKeep(t *testing.T) {
	infos := func() []sandbox.Info {
		var out []sandbox.Info
		for _, s := range psStatuses {
			out = append(out, sandbox.Info{ID: string(s), Status: s})
		}
		return out
	}
	ids := func(in []sandbox.Info) string {
		var s []string
		for _, x := range in {
			s = append(s, x.ID)
		}
		return strings.Join(s, " ")
	}
	var none psFilter
	if got := ids(none.keep(infos(), false)); got != "starting running paused orphaned" {
		t.Errorf("ps = %q, want the sandboxes whose VM is up", got)
	}
	if got := ids(none.keep(infos(), true)); got != "created starting running paused exited orphaned" {
		t.Errorf("ps -a = %q, want all", got)
	}
	byStatus := psFilter{statuses: []sandbox.Status{sandbox.Exited}}
	if got := ids(byStatus.keep(infos(), false)); got != "exited" {
		t.Errorf("ps --filter status=exited = %q, want exited (status implies -a)", got)
	}
}

func TestStatusAgo(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		exit *sandbox.Exit
		want string
	}{
		{&sandbox.Exit{Code: 0, At: now.Add(-3 * time.Minute)}, "exited (0) 3 minutes ago"},
		{&sandbox.Exit{Code: 2, At: now.Add(-1 * time.Second)}, "exited (2) 1 second ago"},
		{&sandbox.Exit{Code: -1, Signal: "SIGKILL", At: now.Add(-2 * time.Hour)}, "exited (SIGKILL) 2 hours ago"},
		{&sandbox.Exit{Code: -1, Error: "boom", At: now.Add(-72 * time.Hour)}, "exited (failed) 3 days ago"},
		{&sandbox.Exit{Code: 0, At: now}, "exited (0) just now"},
		{&sandbox.Exit{Code: 0}, "exited (0)"},
	}
	for _, tt := range tests {
		if got := status(sandbox.Info{Status: sandbox.Exited, Exit: tt.exit}, now); got != tt.want {
			t.Errorf("status(%+v) = %q, want %q", tt.exit, got, tt.want)
		}
	}
	if got := status(sandbox.Info{Status: sandbox.Running}, now); got != "running" {
		t.Errorf("status(running) = %q", got)
	}
}
