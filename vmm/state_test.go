package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/fcapi"
	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// roundTrip passes st through JSON, as a state file would.
func roundTrip(t *testing.T, st MachineState) MachineState {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatalf("marshal state: %v", err)
	}
	var out MachineState
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal state: %v\n%s", err, b)
	}
	return out
}

func TestAttach(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "attach", guest.Halt)
		cfg.Placeholders = 1
		cfg.Console = &safeBuffer{} // not serialisable: State must drop it
		cfg.ConsolePath = ""
		owner := startMachine(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		st := roundTrip(t, owner.State())
		if st.Firecracker == "" || st.PID == 0 || st.StartTime == 0 || len(st.Pool) != 1 {
			t.Fatalf("state is missing things: %+v", st)
		}
		m, err := Attach(ctx, st)
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		if pid, stt := m.PID(); pid != st.PID || stt != st.StartTime {
			t.Errorf("attached PID %d/%d, want %d/%d", pid, stt, st.PID, st.StartTime)
		}
		if err := m.Pause(ctx); err != nil {
			t.Fatalf("Pause through the attached machine: %v", err)
		}
		assertInstanceState(t, owner, fcapi.StatePaused)
		if !m.State().Paused {
			t.Error("state of the attached machine does not say paused")
		}
		if err := m.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		tids, err := m.VCPUThreads(ctx)
		if err != nil || len(tids) != 1 {
			t.Errorf("VCPUThreads = %v, %v", tids, err)
		}

		// A second attachment can be released without stopping the VMM.
		other, err := Attach(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Release(); err != nil {
			t.Fatal(err)
		}
		assertInstanceState(t, owner, fcapi.StateRunning)

		// Stop through the attachment: signals go through its pidfd.
		if err := m.Stop(ctx); err != nil {
			t.Fatalf("Stop through the attached machine: %v", err)
		}
		es, err := m.Wait(ctx)
		if err != nil || !es.Unknown {
			t.Errorf("Wait of an attached machine = %v, %v; want an unknown status", es, err)
		}
		// The owner, the real parent, reaps it.
		if _, err := owner.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAttachRefusesMismatch(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	owner := startMachine(t, testConfig(t, b, "x", guest.Halt))
	good := owner.State()
	tests := []struct {
		name   string
		mutate func(*MachineState)
		want   error
	}{
		{"start time differs", func(s *MachineState) { s.StartTime++ }, ErrNotFound},
		{"no such pid", func(s *MachineState) { s.PID = 1 << 22; s.StartTime = 1 }, ErrNotFound},
		{"no pid", func(s *MachineState) { s.PID = 0 }, ErrNotFound},
		{"format version", func(s *MachineState) { s.Version = 99 }, ErrInvalidState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckLeaks(t)
			st := good
			tt.mutate(&st)
			m, err := Attach(context.Background(), st)
			if !errors.Is(err, tt.want) {
				if m != nil {
					m.Release()
				}
				t.Fatalf("Attach = %v, want %v", err, tt.want)
			}
			t.Logf("Attach: %v", err)
		})
	}
}
