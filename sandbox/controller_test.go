package sandbox

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
)

// Labels are recorded, shown and selected on through the Controller.
func TestLabels(t *testing.T) {
	r, fc := newRuntime(t, false)
	var c Controller = r
	ctx := context.Background()
	kernel := haltGuest(t, "labelled")
	for id, labels := range map[string]map[string]string{
		"a": {"app": "web", "tier": "front"},
		"b": {"app": "db"},
		"c": nil,
	} {
		if _, err := c.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc, Labels: labels}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer c.Remove(ctx, id, true)
	}
	tests := []struct {
		filter map[string]string
		want   []string
	}{
		{nil, []string{"a", "b", "c"}},
		{map[string]string{"app": "web"}, []string{"a"}},
		{map[string]string{"app": "web", "tier": "front"}, []string{"a"}},
		{map[string]string{"app": "web", "tier": "back"}, nil},
		{map[string]string{"app": "db"}, []string{"b"}},
	}
	for _, tt := range tests {
		infos, err := c.List(ctx, ListOptions{Labels: tt.filter})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, in := range infos {
			got = append(got, in.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(labels %v) = %v, want %v", tt.filter, got, tt.want)
		}
	}
	if in, err := c.Inspect(ctx, "a"); err != nil || in.Spec.Labels["tier"] != "front" {
		t.Errorf("Inspect a: labels %v, %v", in.Spec.Labels, err)
	}
	for _, bad := range []map[string]string{{"": "x"}, {"-x": "y"}, {"k": "two\nlines"}, {strings.Repeat("k", 64): "v"}} {
		if _, err := c.Create(ctx, Spec{ID: "bad", Kernel: kernel, Firecracker: fc, Labels: bad}, CreateOptions{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create with labels %q: %v, want ErrInvalid", bad, err)
		}
	}
}

// Console reads the guest's console through the runtime, as it is or
// followed until the VM exits.
func TestConsoleThroughRuntime(t *testing.T) {
	testutil.CheckLeaks(t)
	r, fc := newRuntime(t, false)
	var c Controller = r
	ctx := context.Background()
	kernel := testutil.GuestKernel(t, guest.Options{Message: "hello and bye", Mode: guest.PowerOff})
	if _, err := c.Create(ctx, Spec{ID: "talker", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer c.Remove(ctx, "talker", true)
	rc, err := c.Console(ctx, "talker", LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
		t.Errorf("console before start: %q, %v; want nothing", b, err)
	}
	rc.Close()
	if _, err := c.Start(ctx, "talker"); err != nil {
		t.Fatal(err)
	}
	follow, err := c.Console(ctx, "talker", LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(follow) // ends once the guest powered off
		got <- string(b)
	}()
	select {
	case s := <-got:
		if !strings.Contains(s, "hello and bye") {
			t.Errorf("followed console %q lacks the greeting", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the followed console did not end when the VM did")
	}
	logs, err := c.Logs(ctx, "talker", LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	if _, err := io.ReadAll(logs); err != nil {
		t.Errorf("read the firecracker log: %v", err)
	}
}

// Closing a followed console ends the follow at once.
func TestConsoleFollowClose(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	mustStart(t, r, Spec{ID: "idle", Kernel: haltGuest(t, "idle"), Firecracker: fc})
	defer r.Remove(ctx, "idle", true)
	rc, err := r.Console(ctx, "idle", LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(rc); done <- err }()
	time.Sleep(50 * time.Millisecond)
	rc.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the follow")
	}
}
