package main

import (
	"runtime/debug"
	"testing"
)

func TestDescribeBuild(t *testing.T) {
	vcs := func(rev, tm, mod string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: tm}, {Key: "vcs.modified", Value: mod}}
	}
	const rev = "c6b0d2c42807578f2de1a981c9a9b7214a4f9c74"
	tests := []struct {
		name   string
		info   *debug.BuildInfo
		linked string
		want   build
		line   string // commitLine
		short  string // what --version prints after "kindling version "
	}{
		{name: "no build info", want: build{version: "devel"}, short: "devel"},
		{name: "test binary", info: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, want: build{version: "devel"}, short: "devel"},
		{name: "go install at a tag", info: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}},
			want: build{version: "v1.2.3"}, short: "v1.2.3"},
		{name: "checkout with changes",
			info: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201012625-c6b0d2c42807+dirty"}, Settings: vcs(rev, "2026-12-01T01:26:25Z", "true")},
			want: build{version: "v0.0.0-20261201012625-c6b0d2c42807+dirty", commit: rev, time: "2026-12-01T01:26:25Z", modified: true},
			line: "commit " + rev + " (2026-12-01T01:26:25Z, with local changes)", short: "v0.0.0-20261201012625-c6b0d2c42807+dirty"},
		{name: "clean checkout, no module version",
			info: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "2026-12-01T01:26:25Z", "false")},
			want: build{version: "devel", commit: rev, time: "2026-12-01T01:26:25Z"},
			line: "commit " + rev + " (2026-12-01T01:26:25Z)", short: "devel, commit c6b0d2c42807"},
		{name: "version set at link time", info: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "", "true")}, linked: "2.0.0",
			want: build{version: "2.0.0", commit: rev, modified: true},
			line: "commit " + rev + " (with local changes)", short: "2.0.0, commit c6b0d2c42807 with local changes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := describeBuild(tt.info, tt.linked)
			if b != tt.want {
				t.Errorf("describeBuild = %+v, want %+v", b, tt.want)
			}
			if got := b.commitLine(); got != tt.line {
				t.Errorf("commitLine = %q, want %q", got, tt.line)
			}
			if got := b.short(); got != tt.short {
				t.Errorf("short = %q, want %q", got, tt.short)
			}
		})
	}
}
