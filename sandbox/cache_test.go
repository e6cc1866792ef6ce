package sandbox

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	kunix "github.com/kindling-vm/kindling/internal/unix"
	"github.com/kindling-vm/kindling/vmm"
)

// settle waits until state files written before it are old enough for
// their stamps to be trusted (store.Stamp), so that the cache keeps them.
func settle() { time.Sleep(150 * time.Millisecond) }

// Inspect and List read a state file again once it changed, and what they
// hand out is the caller's own: changing it changes nothing cached.
func TestInspectCacheSeesChanges(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "cache guest")
	spec := Spec{ID: "cached", Kernel: kernel, Firecracker: fc, Labels: map[string]string{"n": "1"},
		Drives: []Disk{{Path: kernel, ReadOnly: true}}}
	if _, err := r.Create(ctx, spec, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(ctx, "cached", true) })
	settle()
	in, err := r.Inspect(ctx, "cached")
	if err != nil {
		t.Fatal(err)
	}
	if in.Spec.Labels["n"] != "1" {
		t.Fatalf("labels %v", in.Spec.Labels)
	}
	if r.records.get("cached") == nil {
		t.Fatal("a settled state file was not cached")
	}
	// The caller's changes stay the caller's.
	in.Spec.Labels["n"] = "changed"
	in.Spec.Drives[0].Path = "/changed"
	for _, get := range []func() (Info, error){
		func() (Info, error) { return r.Inspect(ctx, "cached") },
		func() (Info, error) {
			l, err := r.List(ctx, ListOptions{})
			if err != nil || len(l) != 1 {
				return Info{}, fmt.Errorf("list: %d, %v", len(l), err)
			}
			return l[0], nil
		},
	} {
		in, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if in.Spec.Labels["n"] != "1" || in.Spec.Drives[0].Path != kernel {
			t.Fatalf("a caller's change reached the cache: %v, %v", in.Spec.Labels, in.Spec.Drives)
		}
		in.Spec.Labels["n"] = "changed again"
	}

	// A save is seen at once, settled or not.
	for i := 2; i < 5; i++ {
		var rec record
		if err := r.st.Update(ctx, "cached", &rec, func() error { rec.Spec.Labels["n"] = strconv.Itoa(i); return nil }); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			settle()
		}
		in, err := r.Inspect(ctx, "cached")
		if err != nil {
			t.Fatal(err)
		}
		l, err := r.List(ctx, ListOptions{Labels: map[string]string{"n": strconv.Itoa(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if in.Spec.Labels["n"] != strconv.Itoa(i) || len(l) != 1 {
			t.Fatalf("after save %d: inspect says %v, list by label found %d", i, in.Spec.Labels, len(l))
		}
	}

	// A removed sandbox is gone from the cache too.
	if err := r.Remove(ctx, "cached", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Inspect(ctx, "cached"); err == nil {
		t.Fatal("inspect of a removed sandbox: no error")
	}
	if r.records.get("cached") != nil {
		t.Fatal("a removed sandbox is still cached")
	}
}

// Lists and inspects running while the state changes see each save once
// it is made, never a mix (run with -race).
func TestListInspectConcurrent(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "cache guest")
	for i := range 3 {
		id := fmt.Sprintf("conc%d", i)
		if _, err := r.Create(ctx, Spec{ID: id, Kernel: kernel, Firecracker: fc, Labels: map[string]string{"n": "0"}}, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Remove(ctx, id, true) })
	}
	const saves = 30
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				var ins []Info
				if w%2 == 0 {
					l, err := r.List(ctx, ListOptions{})
					if err != nil {
						errs <- err
						return
					}
					ins = l
				} else {
					in, err := r.Inspect(ctx, "conc1")
					if err != nil {
						errs <- err
						return
					}
					ins = []Info{in}
				}
				for _, in := range ins {
					if in.ID != "conc1" {
						continue
					}
					n, err := strconv.Atoi(in.Spec.Labels["n"])
					if err != nil || n < last {
						errs <- fmt.Errorf("label n %q after %d", in.Spec.Labels["n"], last)
						return
					}
					last = n
					in.Spec.Labels["n"] = "garbage" // the caller's own copy
				}
			}
		}()
	}
	for i := 1; i <= saves; i++ {
		var rec record
		if err := r.st.Update(ctx, "conc1", &rec, func() error { rec.Spec.Labels["n"] = strconv.Itoa(i); return nil }); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			settle()
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	in, err := r.Inspect(ctx, "conc1")
	if err != nil || in.Spec.Labels["n"] != strconv.Itoa(saves) {
		t.Fatalf("after the saves: %v, %v", in.Spec.Labels, err)
	}
}

// deepCopy leaves nothing of an Info shared that a caller could change.
func TestDeepCopyInfo(t *testing.T) {
	var in Info
	fill(reflect.ValueOf(&in).Elem(), 0)
	if in.Spec.Labels == nil || in.Network == nil || len(in.Slots) == 0 || in.Slots[0].Drive == nil {
		t.Fatalf("fill left parts empty: %+v", in)
	}
	out := deepCopy(in)
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("copy differs:\n%+v\n%+v", in, out)
	}
	if p := shared(reflect.ValueOf(in), reflect.ValueOf(out), "Info"); p != "" {
		t.Fatalf("%s is shared by the copy", p)
	}
}

// fill sets every exported field reachable from v to something not zero.
func fill(v reflect.Value, depth int) {
	if depth > 8 {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + strconv.Itoa(depth))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(depth + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(depth + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), depth+1)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		v.SetMapIndex(k, e)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), depth+1)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(1e9, 5)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	}
}

// shared names the first pointer, slice or map reachable through exported
// fields that a and b share, or "".
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		return shared(a.Elem(), b.Elem(), path)
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for i := range a.Len() {
			if p := shared(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case reflect.Map:
		if !a.IsNil() && a.Pointer() == b.Pointer() {
			return path
		}
		for _, k := range a.MapKeys() {
			if p := shared(a.MapIndex(k), b.MapIndex(k), fmt.Sprintf("%s[%v]", path, k)); p != "" {
				return p
			}
		}
	case reflect.Array:
		for i := range a.Len() {
			if p := shared(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if f := a.Type().Field(i); f.IsExported() {
				if p := shared(a.Field(i), b.Field(i), path+"."+f.Name); p != "" {
					return p
				}
			}
		}
	}
	return ""
}

// BenchmarkList lists 50 running sandboxes (records whose monitor and VMM
// are this process), as a server does under load: everything cached.
func BenchmarkList(b *testing.B) {
	r, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	st, err := kunix.ProcessStartTime(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	self := procRef{PID: os.Getpid(), StartTime: st}
	for i := range 50 {
		id := fmt.Sprintf("bench%02d", i)
		rec := &record{ID: id, Spec: Spec{ID: id, Kernel: "/k", Firecracker: "/fc", VsockCID: 3, Labels: map[string]string{"i": id}},
			CreatedAt: time.Now(), StartedAt: time.Now(), Status: Running, Kernel: "/k", Monitor: &self,
			Machine: &vmm.MachineState{PID: self.PID, StartTime: self.StartTime, Firecracker: "1.14.2"}}
		if err := r.st.Create(ctx, id, rec); err != nil {
			b.Fatal(err)
		}
	}
	settle()
	b.ReportAllocs()
	for b.Loop() {
		l, err := r.List(ctx, ListOptions{})
		if err != nil || len(l) != 50 || l[0].Status != Running {
			b.Fatalf("list: %d, %v", len(l), err)
		}
	}
}

// A monitor or VMM killed behind the runtime's back is seen gone by the
// very next Inspect and List, though their record is cached and their
// pidfds are kept: no poll interval, no stale answer.
func TestKilledBehindIsSeen(t *testing.T) {
	r, fc := newRuntime(t, false)
	ctx := context.Background()
	kernel := haltGuest(t, "behind guest")
	if _, err := r.Create(ctx, Spec{ID: "behind", Kernel: kernel, Firecracker: fc}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(ctx, "behind", true) })
	in, err := r.Start(ctx, "behind")
	if err != nil {
		t.Fatal(err)
	}
	settle()
	status := func(want Status) {
		t.Helper()
		in, err := r.Inspect(ctx, "behind")
		if err != nil || in.Status != want {
			t.Fatalf("inspect: %s, %v; want %s", in.Status, err, want)
		}
		l, err := r.List(ctx, ListOptions{})
		if err != nil || len(l) != 1 || l[0].Status != want {
			t.Fatalf("list: %+v, %v; want %s", l, err, want)
		}
	}
	for range 2 {
		status(Running) // the second time, cached and watched
	}
	r.procs.mu.Lock()
	watched := len(r.procs.m)
	r.procs.mu.Unlock()
	if r.records.get("behind") == nil || watched != 2 {
		t.Fatalf("not cached (%v) or not watched (%d processes)", r.records.get("behind") != nil, watched)
	}
	// kill kills pid and returns once it is dead (a zombie or reaped).
	kill := func(pid int) {
		t.Helper()
		pfd, err := kunix.OpenPidfd(pid)
		if err != nil {
			t.Fatal(err)
		}
		defer pfd.Close()
		if err := pfd.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := pfd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// The monitor first, so that nobody records the VMM's end.
	kill(in.MonitorPID)
	status(Orphaned)
	kill(in.PID)
	status(Exited)
	in, err = r.Inspect(ctx, "behind")
	if err != nil || in.Exit == nil || in.PID != 0 || in.MonitorPID != 0 {
		t.Fatalf("after both died: %+v, %v", in, err)
	}
}
