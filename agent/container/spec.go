package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Arg is the first argument that makes the agent binary act as the
// container helper.
const Arg = "container"

// StateDir holds, in the guest, one directory per running container: its
// init's PID ("pid") and its root filesystem's mount point ("rootfs", seen
// only inside the container's mount namespace).
const StateDir = "/run/kindling/containers"

// PIDFile is where, in the guest, the keeper of container id records its
// init's PID, once the init runs the container's command.
func PIDFile(id string) string { return path.Join(StateDir, id, "pid") }

// Spec is what the shim asks the guest to run: a container's init ("run")
// or one more process in it ("exec"). It travels as JSON in one argument.
type Spec struct {
	// ID names the container; 1–128 of [A-Za-z0-9_.-], not starting with a dot.
	ID string `json:"id"`
	// Rootfs is the root filesystem ("run" only).
	Rootfs Rootfs `json:"rootfs,omitzero"`
	// Args is the command; Args[0] is looked up in the PATH of Env.
	Args []string `json:"args"`
	// Env is the whole environment (KEY=VALUE), nothing added.
	Env []string `json:"env,omitempty"`
	// Cwd is the working directory inside the container (default /).
	Cwd string `json:"cwd,omitempty"`
	// UID, GID and AdditionalGIDs are the process's credentials.
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGIDs []uint32 `json:"additional_gids,omitempty"`
	// Terminal makes the process's stdin its controlling terminal.
	Terminal bool `json:"terminal,omitempty"`
	// Hostname is the container's hostname ("run" only; empty keeps the guest's).
	Hostname string `json:"hostname,omitempty"`
	// Rlimits are set before the command runs.
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	// Mounts are extra mounts ("run" only), in order: a tmpfs, or a bind
	// mount of a file or directory of the guest (Source; the shim copies
	// a volume's content there first, see VolumeDir).
	Mounts []Mount `json:"mounts,omitempty"`
}

// Rootfs says where a container's root filesystem is in the guest: Device,
// a block device (or, in a simulated guest, the drive's backing file, which
// is attached to a loop device) holding an ext4 file system; or Dir, a
// directory of the guest, bind-mounted.
type Rootfs struct {
	Device   string `json:"device,omitempty"`
	Dir      string `json:"dir,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Rlimit is one resource limit, named as in the OCI spec (RLIMIT_NOFILE).
type Rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

// Mount is an extra file system mounted in the container at Destination:
// Type "tmpfs", or "bind" of the guest's path Source ("ro" in Options makes
// it read-only).
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// VolumeDir is where, in the guest, the shim unpacks (with "container
// unpack") the content of volume key of a pod's VM, for bind mounts.
func VolumeDir(key string) string { return "/run/kindling/volumes/" + key }

// Encode gives the spec as the helper's argument.
func (s Spec) Encode() (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode container spec: %w", err)
	}
	return string(b), nil
}

// Decode reads a helper argument.
func Decode(arg string) (Spec, error) {
	var s Spec
	d := json.NewDecoder(strings.NewReader(arg))
	d.DisallowUnknownFields()
	if err := d.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("container spec: %w", err)
	}
	return s, nil
}

// ValidID checks a container ID.
func ValidID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return fmt.Errorf("container id %q: want 1-128 of letters, digits and _.- not starting with a dot", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-", r)) {
			return fmt.Errorf("container id %q: want 1-128 of letters, digits and _.- not starting with a dot", id)
		}
	}
	return nil
}

// Validate checks a spec for mode "run" (run true) or "exec".
func (s Spec) Validate(run bool) error {
	if err := ValidID(s.ID); err != nil {
		return err
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return errors.New("container spec: no command (give args)")
	}
	if s.Cwd != "" && !path.IsAbs(s.Cwd) {
		return fmt.Errorf("container spec: cwd %q is not absolute", s.Cwd)
	}
	for _, r := range s.Rlimits {
		if _, ok := rlimitTypes[r.Type]; !ok {
			return fmt.Errorf("container spec: unknown rlimit %q", r.Type)
		}
	}
	if !run {
		return nil
	}
	if (s.Rootfs.Device == "") == (s.Rootfs.Dir == "") {
		return errors.New("container spec: give exactly one of rootfs device and rootfs dir")
	}
	for _, m := range s.Mounts {
		switch {
		case m.Type == "tmpfs":
		case m.Type == "bind" && path.IsAbs(m.Source) && path.Clean(m.Source) == m.Source:
		case m.Type == "bind":
			return fmt.Errorf("container spec: bind mount %s: source %q: want a clean absolute path of the guest", m.Destination, m.Source)
		default:
			return fmt.Errorf("container spec: mount %s: type %q not supported in the guest (tmpfs or bind)", m.Destination, m.Type)
		}
		if !path.IsAbs(m.Destination) || path.Clean(m.Destination) == "/" {
			return fmt.Errorf("container spec: mount destination %q: want an absolute path other than /", m.Destination)
		}
	}
	return nil
}

// rlimitTypes maps OCI rlimit names to resource numbers (x86-64 Linux).
var rlimitTypes = map[string]int{
	"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
	"RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
	"RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
	"RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
