package unix

import (
	"errors"
	"os"
	"testing"
)

func TestProcessStartAndState(t *testing.T) {
	st, state, err := ProcessStartAndState(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want, err := ProcessStartTime(os.Getpid())
	if err != nil || st != want {
		t.Errorf("start time %d, ProcessStartTime says %d (%v)", st, want, err)
	}
	if state != 'R' && state != 'S' {
		t.Errorf("this process's state %q", state)
	}
	if _, _, err := ProcessStartAndState(0); !errors.Is(err, ErrNoProcess) {
		t.Errorf("pid 0: %v", err)
	}
	if _, _, err := ProcessStartAndState(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Errorf("a pid beyond pid_max: %v", err)
	}
}
