package vmm

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kindling-vm/kindling/internal/guest"
	"github.com/kindling-vm/kindling/internal/testutil"
	"github.com/kindling-vm/kindling/internal/vmmproc"
)

// procSpawner spawns with vmmproc in this process, as a monitor would,
// writing the console to the config's ConsolePath, and ends what it
// spawned at cleanup.
func procSpawner(t *testing.T, consolePath string, spawned chan<- *vmmproc.Process) Spawner {
	return func(ctx context.Context, c Command) (Spawned, error) {
		f, err := os.OpenFile(consolePath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return Spawned{}, err
		}
		p, err := vmmproc.Start(ctx, vmmproc.Command{Path: c.Path, Args: c.Args, Env: c.Env, Dir: c.Dir, NetNS: c.NetNS, PIDFile: c.PIDFile}, f)
		if err != nil {
			f.Close()
			return Spawned{}, err
		}
		exited := make(chan SpawnedExit, 1)
		go func() {
			<-p.Done()
			f.Close()
			e := p.Exit()
			exited <- SpawnedExit{Status: ExitStatus{Code: e.Code, Signal: e.Signal, Unknown: e.Unknown, Time: time.Now()}, Stderr: p.Stderr()}
			close(exited)
		}()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.End(ctx, 0, true)
		})
		if spawned != nil {
			spawned <- p
		}
		return Spawned{PID: p.PID(), StartTime: p.StartTime(), Exited: exited}, nil
	}
}

func TestSpawnerStartsAndWatches(t *testing.T) {
	backends(t, "", func(t *testing.T, b backend) {
		cfg := testConfig(t, b, "spawned elsewhere", guest.Halt)
		// An earlier run's output must not count as the marker.
		if err := os.WriteFile(cfg.ConsolePath, []byte("spawned elsewhere\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.WaitConsole = "spawned elsewhere"
		spawned := make(chan *vmmproc.Process, 1)
		m, err := New(cfg, WithSpawner(procSpawner(t, cfg.ConsolePath, spawned)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		p := <-spawned
		if pid, st := m.PID(); pid != p.PID() || st != p.StartTime() {
			t.Errorf("machine names pid %d/%d, spawned %d/%d", pid, st, p.PID(), p.StartTime())
		}
		b2, _ := os.ReadFile(cfg.ConsolePath)
		if strings.Count(string(b2), "spawned elsewhere") < 2 {
			t.Errorf("Start returned before the marker was written again: %q", b2)
		}
		if st := m.State(); st.PID != p.PID() || st.Firecracker == "" {
			t.Errorf("state %+v", st)
		}
		// The spawner's process ends the VMM: the Machine sees it, with the
		// status the spawner reported.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel2()
		if err := p.End(ctx2, 0, true); err != nil {
			t.Fatal(err)
		}
		status, err := m.Wait(ctx2)
		if err != nil || status.Signal != 9 {
			t.Errorf("wait = %+v, %v; want killed", status, err)
		}
		stopAndCheck(t, m)
	})
}

func TestSpawnerVMMDiesDuringStart(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	for _, settings := range []string{`{"die_at_start":true,"stderr":"no luck"}`, `{"exit_at":2,"stderr":"no luck"}`} {
		b.fakeSettings = settings
		cfg := testConfig(t, b, "never", guest.Halt)
		m, err := New(cfg, WithSpawner(procSpawner(t, cfg.ConsolePath, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = m.Start(ctx)
		cancel()
		if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "no luck") {
			t.Errorf("%s: start = %v; want the exit, with stderr", settings, err)
		}
		if _, err := os.Stat(cfg.SocketPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: socket left: %v", settings, err)
		}
	}
}

func TestSpawnerFails(t *testing.T) {
	testutil.CheckLeaks(t)
	b := backend{name: "fake", path: testutil.FakeFirecracker(t)}
	cfg := testConfig(t, b, "never", guest.Halt)
	boom := errors.New("no monitor")
	m, err := New(cfg, WithSpawner(func(context.Context, Command) (Spawned, error) { return Spawned{}, boom }))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); !errors.Is(err, boom) {
		t.Errorf("start = %v", err)
	}
}
