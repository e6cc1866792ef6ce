package vmm

import (
	"testing"
)

func TestConsoleWatch(t *testing.T) {
	tests := []struct {
		name   string
		marker string
		chunks []string
		found  bool
	}{
		{"in one chunk", "ready", []string{"boot... ready\n"}, true},
		{"split across chunks", "ready", []string{"boot... re", "a", "dy\n"}, true},
		{"absent", "ready", []string{"boot... rea", "xdy"}, false},
		{"one byte marker", "!", []string{"a", "b!"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newConsoleWatch(tt.marker)
			for _, c := range tt.chunks {
				w.feed([]byte(c))
			}
			w.close()
			select {
			case <-w.found:
				if !tt.found {
					t.Error("marker reported but absent")
				}
			default:
				if tt.found {
					t.Error("marker not reported")
				}
			}
		})
	}
}
