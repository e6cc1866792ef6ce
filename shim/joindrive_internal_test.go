package shim

import "testing"

func TestSlotDevice(t *testing.T) {
	for _, c := range []struct {
		slot, want string
		bad        bool
	}{
		{slot: "pool0", want: "/dev/vdc"},
		{slot: "pool7", want: "/dev/vdj"},
		{slot: "pool8", bad: true}, // beyond the shim's pool
		{slot: "drive0", bad: true},
		{slot: "", bad: true},
	} {
		got, err := slotDevice(c.slot)
		if c.bad {
			if err == nil {
				t.Errorf("slotDevice(%q) = %q, want an error", c.slot, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("slotDevice(%q) = %q, %v; want %q", c.slot, got, err, c.want)
		}
	}
}
